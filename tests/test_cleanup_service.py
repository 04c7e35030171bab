"""The cleanup service called directly (a command, a signal receiver, a shell): its documented
defaults, a session that was never stored, and the trace it leaves in the logs."""

from __future__ import annotations

import logging

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth import SESSION_KEY, get_user_model
from django.contrib.sessions.backends.base import UpdateError
from django.contrib.sessions.backends.db import SessionStore as PlainSessionStore
from django.db import DatabaseError, connection
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext

from patient_data import audit, audit_chain, cleanup, patient_session
from patient_data import meta as session_meta
from patient_data.middleware.auth import USER_ATTR
from patient_data.models import AuditChainHead, CleanupEvent, PatientSessionState
from patient_data.refs import session_ref
from patient_data.sessions.db import SessionStore

pytestmark = pytest.mark.django_db(transaction=True)

PATIENT_KEYS = {"patient_summary", "current_patient_id"}


def _session_with_patient_data(*, saved: bool = True) -> SessionStore:
    session = SessionStore()
    patient_session.store(session, "patient_summary", {"problems": ["SYNTH-P"]})
    patient_session.store(session, "current_patient_id", "SYN-XX-000003")
    if saved:
        session.save()
    return session


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_cleanup_called_without_arguments_is_a_manual_api_clear(kind, caplog):
    session = _session_with_patient_data()
    clear = (
        cleanup.clear_patient_session_data
        if kind == "sync"
        else async_to_sync(cleanup.aclear_patient_session_data)
    )
    with caplog.at_level(logging.DEBUG, "patient_data.cleanup"):
        assert clear(session) == 2
    event = CleanupEvent.objects.get()
    assert (event.action, event.reason, event.source) == (
        "clear_patient_data",
        "manual_cleanup",
        "api",
    )
    assert (event.items_cleared, event.actor_id) == (2, None)
    assert event.session_ref == session_ref(session.session_key)
    assert "Cleanup manual_cleanup/api: 2 items." in caplog.messages
    assert not PATIENT_KEYS & set(SessionStore(session.session_key).load())


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_session_never_stored_is_cleaned_in_memory_only(kind):
    session = _session_with_patient_data(saved=False)
    clear = (
        cleanup.clear_patient_session_data
        if kind == "sync"
        else async_to_sync(cleanup.aclear_patient_session_data)
    )
    assert clear(session, reason="manual_cleanup", source="api") == 2
    assert not PATIENT_KEYS & set(session.keys())
    assert session.session_key is None  # nothing was written for it
    assert not PatientSessionState.objects.exists()
    assert CleanupEvent.objects.get().items_cleared == 2


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_default_cleanup_voids_a_copy_loaded_before_it(kind):
    session = _session_with_patient_data()
    earlier = SessionStore(session.session_key)
    assert PATIENT_KEYS <= set(earlier.keys())  # a concurrent request, holding the data
    clear = (
        cleanup.clear_patient_session_data
        if kind == "sync"
        else async_to_sync(cleanup.aclear_patient_session_data)
    )
    assert clear(session) == 2
    earlier["preference"] = "dark"
    earlier.save()
    stored = SessionStore(session.session_key).load()
    assert not PATIENT_KEYS & set(stored)
    assert stored["preference"] == "dark"


@pytest.mark.parametrize("loaded_as", [USER_ATTR, "_cached_user", "_acached_user"])
def test_the_actor_is_the_user_the_request_loaded_already(clinician, loaded_as):
    # The project's authentication middleware, or Django's sync or async one, loaded the user.
    request = RequestFactory().post("/")
    request.session = _session_with_patient_data()
    setattr(request, loaded_as, clinician)
    assert cleanup.clear_patient_session_data(request, reason="logout", source="logout") == 2
    assert CleanupEvent.objects.get().actor_id == clinician.pk


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_an_actor_named_by_the_caller_wins_over_the_loaded_user(kind, clinician):
    staff = get_user_model().objects.create(username="staff-actor")
    request = RequestFactory().post("/")
    request.session = _session_with_patient_data()
    request._cached_user = clinician
    clear = (
        cleanup.clear_patient_session_data
        if kind == "sync"
        else async_to_sync(cleanup.aclear_patient_session_data)
    )
    clear(request, reason="staff_cleanup", source="staff", actor=staff)
    assert CleanupEvent.objects.get().actor_id == staff.pk


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize(("before", "audited"), [({SESSION_KEY: "7"}, True), ({}, False)])
def test_a_lost_session_is_audited_when_it_held_a_login(kind, before, audited):
    # Other code flushed the session: a login that ended is recorded even without patient
    # data, an anonymous empty session is not (it must not be able to fill the trail).
    request = RequestFactory().post("/")
    request.session = SessionStore()
    record = cleanup.record_lost if kind == "sync" else async_to_sync(cleanup.arecord_lost)
    assert record(request, before, reason="session_flushed", source="middleware") == 0
    rows = list(CleanupEvent.objects.values_list("action", "reason", "items_cleared"))
    assert rows == ([("end_session", "session_flushed", 0)] if audited else [])


def test_voiding_a_client_side_session_with_nothing_in_it_writes_no_audit_row():
    cleared = async_to_sync(cleanup.avoid_client_session)(
        "a" * 32, "b" * 32, (), 0, reason="browser_closed", source="presence"
    )
    assert cleared == 0
    assert PatientSessionState.objects.get(ref="a" * 32).generation == 1  # voided all the same
    assert not CleanupEvent.objects.exists()


def test_clearing_a_client_side_session_is_audited_as_a_clear_with_its_count():
    cleared = async_to_sync(cleanup.avoid_client_session)(
        "a" * 32, "b" * 32, ("patient_summary",), 2, reason="staff_cleanup", source="staff"
    )
    assert cleared == 2
    rows = list(CleanupEvent.objects.values_list("action", "reason", "items_cleared"))
    assert rows == [("clear_patient_data", "staff_cleanup", 2)]
    assert PatientSessionState.objects.get(ref="a" * 32).generation == 1


def test_ending_a_client_side_session_is_audited_even_without_patient_data():
    # Its login ends (the ref is revoked): worth a row, as any ended login is.
    cleared = async_to_sync(cleanup.avoid_client_session)(
        "a" * 32, "b" * 32, (), 0, reason="staff_end_session", source="staff", end=True
    )
    assert cleared == 0
    rows = list(CleanupEvent.objects.values_list("action", "reason", "items_cleared"))
    assert rows == [("end_session", "staff_end_session", 0)]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_ending_a_session_names_the_actor(kind, clinician):
    staff = get_user_model().objects.create(username="staff-end")
    request = RequestFactory().post("/")
    request.session = _session_with_patient_data()
    request._cached_user = clinician
    key = request.session.session_key
    end = cleanup.end_session if kind == "sync" else async_to_sync(cleanup.aend_session)
    assert end(request, reason="staff_end", source="staff", actor=staff) == 2
    event = CleanupEvent.objects.get()
    assert (event.action, event.actor_id, event.items_cleared) == ("end_session", staff.pk, 2)
    assert not SessionStore().exists(key)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_ending_a_session_ended_meanwhile_clears_nothing_and_records_nothing(
    kind, clinician, caplog
):
    request = RequestFactory().post("/")
    request.session = _session_with_patient_data()
    request._cached_user = clinician
    key = request.session.session_key
    SessionStore(key).delete()  # ended by another request
    end = cleanup.end_session if kind == "sync" else async_to_sync(cleanup.aend_session)
    with caplog.at_level(logging.INFO, "patient_data.cleanup"):
        assert end(request, reason="session_max_inactive", source="middleware") == 0
    assert caplog.messages == [
        f"A request of an ended session was logged out ({session_ref(key)})."
    ]
    assert not CleanupEvent.objects.exists()
    assert getattr(request, cleanup.LOGOUT_RECORDED_FLAG)
    assert not request.user.is_authenticated


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_ending_a_login_under_a_plain_django_engine_is_recorded(kind, clinician):
    # An unguarded engine (no stored_blob, no client_side): an end without patient data
    # still goes through, and is audited because a login ended.
    session = PlainSessionStore()
    session[SESSION_KEY] = str(clinician.pk)
    session.save()
    request = RequestFactory().post("/")
    request.session = session
    request._cached_user = clinician
    end = cleanup.end_session if kind == "sync" else async_to_sync(cleanup.aend_session)
    assert end(request, reason="session_max_inactive", source="middleware") == 0
    event = CleanupEvent.objects.get()
    assert (event.action, event.reason, event.actor_id) == (
        "end_session",
        "session_max_inactive",
        clinician.pk,
    )


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize(("login", "audited"), [(True, True), (False, False)])
def test_an_end_through_the_clear_call_is_audited_when_a_login_ended(kind, login, audited):
    session = SessionStore()
    if login:
        session[SESSION_KEY] = "7"
    session["preference"] = "dark"
    session.save()
    clear = (
        cleanup.clear_patient_session_data
        if kind == "sync"
        else async_to_sync(cleanup.aclear_patient_session_data)
    )
    ended = clear(session, reason="logout", source="middleware", action="end_session")
    assert ended == 0
    rows = list(CleanupEvent.objects.values_list("action", "reason", "items_cleared"))
    assert rows == ([("end_session", "logout", 0)] if audited else [])


@pytest.mark.parametrize(("login", "audited"), [(True, True), (False, False)])
def test_the_logout_receiver_audits_an_ended_login_without_patient_data(login, audited):
    request = RequestFactory().post("/")
    request.session = SessionStore()
    if login:
        request.session[SESSION_KEY] = "7"
    request.session.save()
    cleanup.on_user_logged_out(sender=None, request=request, user=None)
    rows = list(CleanupEvent.objects.values_list("action", "reason", "source", "items_cleared"))
    assert rows == ([("end_session", "logout", "logout", 0)] if audited else [])


def test_a_plain_engine_session_never_stored_is_cleaned_in_memory_only():
    session = PlainSessionStore()
    patient_session.store(session, "patient_summary", {"problems": ["SYNTH-P"]})
    assert cleanup.clear_patient_session_data(session) == 1
    assert "patient_summary" not in session.keys()
    assert session.session_key is None  # nothing was written for it
    assert not PatientSessionState.objects.exists()


def test_a_stored_plain_engine_session_is_cleaned_where_it_is_stored():
    session = PlainSessionStore()
    patient_session.store(session, "patient_summary", {"problems": ["SYNTH-P"]})
    session["preference"] = "dark"
    session.save()
    assert cleanup.clear_patient_session_data(session) == 1
    stored = PlainSessionStore(session.session_key).load()
    assert "patient_summary" not in stored
    assert stored["preference"] == "dark"


def test_a_session_removed_between_the_read_and_the_write_is_not_recorded(monkeypatch):
    session = _session_with_patient_data()

    def removed_meanwhile(must_create: bool = False) -> None:
        raise UpdateError  # what Django's engines raise when the stored session went away

    monkeypatch.setattr(session, "save_unguarded", removed_meanwhile)
    assert cleanup.clear_patient_session_data(session) == 0
    assert not CleanupEvent.objects.exists()


def test_a_session_row_deleted_before_its_update_is_not_recorded(monkeypatch):
    session = _session_with_patient_data()
    rows = session.model.objects.filter(session_key=session.session_key)
    read = session.stored_blob

    def read_then_deleted() -> dict:
        data = read()
        rows.delete()
        return data

    monkeypatch.setattr(session, "stored_blob", read_then_deleted)
    assert cleanup.clear_patient_session_data(session) == 0
    assert not CleanupEvent.objects.exists()


def _generation(session: SessionStore) -> int:
    ref = session_meta.read(session.load())["ref"]
    return PatientSessionState.objects.get(ref=ref).generation


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_an_audit_row_that_cannot_be_written_leaves_the_session_uncleaned(kind, monkeypatch):
    session = _session_with_patient_data()
    generation = _generation(SessionStore(session.session_key))

    def failing(cleanup_: cleanup.Cleanup) -> None:
        raise DatabaseError("the audit insert failed")

    monkeypatch.setattr(audit, "record", failing)
    clear = (
        cleanup.clear_patient_session_data
        if kind == "sync"
        else async_to_sync(cleanup.aclear_patient_session_data)
    )
    with pytest.raises(DatabaseError):
        clear(session)
    stored = SessionStore(session.session_key)
    assert PATIENT_KEYS <= set(stored.load())
    assert _generation(stored) == generation
    assert not CleanupEvent.objects.exists()


def test_an_error_after_the_audit_row_rolls_the_row_back_with_the_session(monkeypatch):
    session = _session_with_patient_data()
    write_row = audit.record

    def written_then_failing(cleanup_: cleanup.Cleanup) -> None:
        write_row(cleanup_)
        raise DatabaseError("the commit failed")

    monkeypatch.setattr(audit, "record", written_then_failing)
    with pytest.raises(DatabaseError):
        cleanup.clear_patient_session_data(session)
    assert PATIENT_KEYS <= set(SessionStore(session.session_key).load())
    assert not CleanupEvent.objects.exists()
    write_row(_a_cleanup())  # the chain's head went back with the row: still intact
    assert audit_chain.verify(audit_chain.stored_rows()).intact


def test_a_session_write_that_fails_writes_no_audit_row(monkeypatch):
    session = _session_with_patient_data()

    def failing(must_create: bool = False) -> None:
        raise DatabaseError("the session update failed")

    monkeypatch.setattr(session, "save_unguarded", failing)
    with pytest.raises(DatabaseError):
        cleanup.clear_patient_session_data(session)
    assert not CleanupEvent.objects.exists()
    assert PATIENT_KEYS <= set(SessionStore(session.session_key).load())


def test_the_audit_chain_is_locked_last_in_the_cleanups_one_transaction():
    session = _session_with_patient_data()
    with CaptureQueriesContext(connection) as captured:
        assert cleanup.clear_patient_session_data(session) == 2
    statements = [query["sql"] for query in captured.captured_queries]
    chain = (CleanupEvent._meta.db_table, AuditChainHead._meta.db_table)
    first_chain = next(i for i, sql in enumerate(statements) if any(t in sql for t in chain))
    session_table = PlainSessionStore.get_model_class()._meta.db_table
    assert any(session_table in sql for sql in statements[:first_chain])
    guarded = (session_table, PatientSessionState._meta.db_table)
    assert not [sql for sql in statements[first_chain:] if any(t in sql for t in guarded)]
    assert CleanupEvent.objects.count() == 1


def _a_cleanup() -> cleanup.Cleanup:
    return cleanup.Cleanup("clear_patient_data", "manual_cleanup", "api", 1, ("x",), "r" * 32)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_the_signal_s_arguments_are_built_only_for_receivers(kind, monkeypatch):
    """``asdict`` (a deep copy of the cleanup) is no part of a cleanup nobody listens to."""
    from patient_data.signals import patient_session_cleared

    built: list[cleanup.Cleanup] = []
    asdict = cleanup.asdict

    def counted(value):
        built.append(value)
        return asdict(value)

    monkeypatch.setattr(cleanup, "asdict", counted)
    clear = (
        cleanup.clear_patient_session_data
        if kind == "sync"
        else async_to_sync(cleanup.aclear_patient_session_data)
    )
    assert not patient_session_cleared.has_listeners(cleanup.Cleanup)
    assert clear(_session_with_patient_data()) == 2
    assert built == []
    received: list[dict] = []

    def receiver(sender, **kwargs):
        received.append(kwargs)

    patient_session_cleared.connect(receiver)
    try:
        assert clear(_session_with_patient_data()) == 2
    finally:
        patient_session_cleared.disconnect(receiver)
    assert len(built) == 1
    assert [kwargs["items_cleared"] for kwargs in received] == [2]
