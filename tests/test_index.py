"""The index of sessions holding patient data: written on store and clear only, acted on by ref."""

from __future__ import annotations

from io import StringIO

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext, override_settings

from patient_data import index, patient_session
from patient_data import meta as session_meta
from patient_data.models import CleanupEvent, PatientSessionState
from patient_data.refs import session_ref
from patient_data.registry import META_KEY
from patient_data.sessions.db import SessionStore
from tests.conftest import browser_with_patient_data

pytestmark = pytest.mark.django_db(transaction=True)


async def _stored_session(user_id: str = "7") -> SessionStore:
    session = SessionStore()
    await session.aset("_auth_user_id", user_id)
    await patient_session.astore(session, "patient_summary", {"problems": ["SYNTH-P"]})
    await patient_session.astore(session, "patient_cda_SYN-XX-000009", "<ClinicalDocument/>")
    await session.asave()
    return session


async def test_storing_patient_data_indexes_the_session_without_values():
    session = await _stored_session()
    [entry] = await index.alist()
    assert entry.session_ref == session_ref(session.session_key)
    assert entry.user_id == "7"
    assert entry.items == 2
    assert entry.keys == ("patient_cda_*", "patient_summary")
    assert entry.since is not None
    assert not entry.client_side
    assert "SYN" not in repr(entry) and session.session_key not in repr(entry)


async def test_sessions_without_patient_data_are_not_indexed():
    session = SessionStore()
    await session.aset("_auth_user_id", "7")
    await session.asave()
    assert await index.alist() == []
    assert await PatientSessionState.objects.acount() == 0


def test_a_signed_in_session_without_patient_data_gets_no_generation_row():
    # A login gives the session a ref (to revoke it when it ends) but no patient data: its
    # saves take no generation lock and leave no row behind (docs/mutation.md, guard).
    session = SessionStore()
    session["_auth_user_id"] = "7"
    session[META_KEY] = session_meta.at_login({}, 1_700_000_000.0)
    session.save()
    session["preference"] = "dark"
    session.save()
    assert SessionStore(session.session_key).load()["preference"] == "dark"
    assert not PatientSessionState.objects.exists()
    assert async_list() == []


async def test_a_plain_activity_save_writes_nothing_to_the_index():
    session = await _stored_session()
    data = dict(await session.aitems())
    await session.aset(META_KEY, {**data[META_KEY], "seen": data[META_KEY]["seen"] + 30})

    def save_and_count() -> list[str]:
        with CaptureQueriesContext(connection) as queries:
            session.save()
        return [query["sql"] for query in queries]

    statements = await sync_to_async(save_and_count)()
    state_writes = [
        sql for sql in statements if sql.startswith("UPDATE") and "patientsessionstate" in sql
    ]
    assert state_writes == []


async def test_a_cleanup_removes_the_session_from_the_index():
    session = await _stored_session()
    cleared = await index.aclear_by_ref(
        session_ref(session.session_key), reason="browser_closed", source="presence"
    )
    assert cleared == 2
    assert await index.alist() == []
    stored = await SessionStore(session.session_key).aload()
    assert "patient_summary" not in stored
    event = await CleanupEvent.objects.aget()
    assert (event.reason, event.source, event.items_cleared) == ("browser_closed", "presence", 2)


async def test_ending_by_ref_deletes_the_session_and_audits_the_actor():
    session = await _stored_session()
    staff = await get_user_model().objects.acreate(username="staff-index")
    ended = await index.aclear_by_ref(
        session_ref(session.session_key), reason="staff_end", source="staff", actor=staff, end=True
    )
    assert ended == 2
    assert not await SessionStore().aexists(session.session_key)
    event = await CleanupEvent.objects.aget()
    assert (event.action, event.actor_id) == (CleanupEvent.Action.END_SESSION, staff.pk)


async def test_an_unknown_ref_is_none_and_touches_nothing():
    await _stored_session()
    assert await index.aclear_by_ref("0" * 32, reason="staff_cleanup", source="staff") is None
    assert len(await index.alist()) == 1
    assert await CleanupEvent.objects.acount() == 0


async def test_a_stale_entry_is_dropped_when_acted_on():
    session = await _stored_session()
    ref = session_ref(session.session_key)
    await session.adelete()
    assert await index.aclear_by_ref(ref, reason="browser_closed", source="presence") == 0
    assert await index.alist() == []


async def test_a_key_rotation_follows_the_session():
    session = await _stored_session()
    await session.acycle_key()
    [entry] = await index.alist()
    assert entry.session_ref == session_ref(session.session_key)


def test_a_login_and_patient_page_over_http_indexes_the_session(clinician):
    browser = browser_with_patient_data(clinician)
    rows = list(PatientSessionState.objects.filter(items__gt=0).values("session_ref", "user_id"))
    assert rows == [{"session_ref": session_ref(browser.session_key), "user_id": str(clinician.pk)}]
    assert browser.post("/api/clear-patient-session/").status_code == 200
    assert not PatientSessionState.objects.filter(items__gt=0).exists()


@override_settings(SESSION_ENGINE="patient_data.sessions.signed_cookies")
def test_a_client_side_session_is_cleared_by_a_new_generation(clinician):
    browser = browser_with_patient_data(clinician)
    [entry] = async_list()
    assert entry.client_side
    assert index_clear(entry.session_ref) == 3
    assert browser.get("/_test/plain/").status_code == 200
    assert "patient_summary" not in browser.stored()
    assert async_list() == []


@override_settings(SESSION_ENGINE="patient_data.sessions.signed_cookies")
def test_staff_ending_a_client_side_session_logs_its_cookie_out(clinician):
    browser = browser_with_patient_data(clinician)
    [entry] = async_list()
    ended = async_to_sync(index.aclear_by_ref)(
        entry.session_ref, reason="staff_end_session", source="staff", end=True
    )
    assert ended == 3
    assert browser.get("/_test/whoami/").json() == {"authenticated": False}
    assert "patient_summary" not in browser.stored()
    [event] = CleanupEvent.objects.all()
    recorded = (event.action, event.reason, event.source, event.items_cleared)
    assert recorded == ("end_session", "staff_end_session", "staff", 3)


@override_settings(SESSION_ENGINE="patient_data.sessions.signed_cookies")
def test_staff_clearing_a_client_side_session_is_audited_with_its_count_and_actor(clinician):
    browser = browser_with_patient_data(clinician)
    staff = get_user_model().objects.create(username="staff-index")
    [entry] = async_list()
    cleared = async_to_sync(index.aclear_by_ref)(
        entry.session_ref, reason="staff_cleanup", source="staff", actor=staff
    )
    assert cleared == 3
    event = CleanupEvent.objects.get()
    assert (event.reason, event.source, event.items_cleared) == ("staff_cleanup", "staff", 3)
    assert (event.actor_id, event.session_ref) == (staff.pk, entry.session_ref)
    assert event.keys == ["current_patient_id", "patient_cda_*", "patient_summary"]
    assert browser.get("/_test/plain/").status_code == 200
    assert "patient_summary" not in browser.stored()


def async_list() -> list[index.IndexEntry]:
    return async_to_sync(index.alist)()


def index_clear(ref: str) -> int | None:
    return async_to_sync(index.aclear_by_ref)(ref, reason="browser_closed", source="presence")


def test_seed_demo_gives_staff_both_monitor_permissions_and_the_clinician_none():
    call_command("seed_demo", patients=0, password="seed-pass-71", staff_password="seed-pass-71",
                 stdout=StringIO())  # fmt: skip
    users = get_user_model().objects
    staff, clinician = users.get(username="staff"), users.get(username="clinician")
    assert staff.has_perms(
        ["patient_data.view_session_monitor", "patient_data.cleanup_any_session"]
    )
    assert not clinician.has_perm("patient_data.view_session_monitor")
    assert not clinician.has_perm("patient_data.cleanup_any_session")
