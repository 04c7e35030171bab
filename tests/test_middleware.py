"""PatientSessionSecurityMiddleware, through the sync Client and the async AsyncClient."""

from __future__ import annotations

import asyncio
import logging
import re
import time

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth import SESSION_KEY
from django.test import override_settings

from patient_data import epoch, events, notices
from patient_data.conf import conf
from patient_data.models import CleanupEvent
from patient_data.refs import session_ref
from patient_data.registry import META_KEY

MINUTE = 60


def test_idle_patient_data_is_cleared_after_the_timeout(with_patient_data, caplog):
    with_patient_data.rewrite(seen=time.time() - 31 * MINUTE)
    with caplog.at_level(logging.INFO, "patient_data.middleware.patient_session_security"):
        response = with_patient_data.get("/_test/plain/")
    stored = with_patient_data.stored()
    assert not {"patient_summary", "current_patient_id", "patient_cda_SYN-XX-000001"} & set(stored)
    assert stored[SESSION_KEY]  # still logged in: only the patient data went
    assert response["X-Patient-Session-Cleared"] == "patient_session_timeout"
    event = CleanupEvent.objects.get()
    assert (event.action, event.reason, event.source) == (
        "clear_patient_data",
        "patient_session_timeout",
        "middleware",
    )
    assert event.items_cleared == 3
    assert event.keys == ["current_patient_id", "patient_cda_*", "patient_summary"]
    assert (
        "Patient session security cleanup triggered by: patient_session_timeout. "
        "Cleared 3 patient data items." in caplog.messages
    )


def test_activity_within_the_timeout_keeps_the_data(with_patient_data):
    with_patient_data.rewrite(seen=time.time() - 29 * MINUTE)
    with_patient_data.get("/_test/plain/")
    assert "patient_summary" in with_patient_data.stored()
    assert not CleanupEvent.objects.exists()


def test_max_inactive_time_ends_the_whole_session(with_patient_data):
    with_patient_data.rewrite(seen=time.time() - 61 * MINUTE)
    response = with_patient_data.get("/_test/whoami/")
    assert response.json() == {"authenticated": False}
    assert with_patient_data.stored() == {}
    event = CleanupEvent.objects.get()
    assert (event.action, event.reason) == ("end_session", "session_max_inactive")
    assert event.items_cleared == 3


def test_max_inactive_time_applies_to_sessions_without_patient_data(logged_in):
    logged_in.get("/_test/plain/")  # first activity stamp of the authenticated session
    logged_in.rewrite(seen=time.time() - 61 * MINUTE)
    assert logged_in.get("/_test/whoami/").json() == {"authenticated": False}
    assert CleanupEvent.objects.get().reason == "session_max_inactive"


@override_settings(PATIENT_SESSION_TIMEOUT=5, PATIENT_MAX_INACTIVE_TIME=10)
def test_both_settings_have_their_own_effect(with_patient_data):
    """Original defect 2: the max-inactive branch was unreachable."""
    with_patient_data.rewrite(seen=time.time() - 6 * MINUTE)
    assert with_patient_data.get("/_test/whoami/").json() == {"authenticated": True}
    assert "patient_summary" not in with_patient_data.stored()
    with_patient_data.rewrite(seen=time.time() - 11 * MINUTE)
    assert with_patient_data.get("/_test/whoami/").json() == {"authenticated": False}
    assert [e.reason for e in CleanupEvent.objects.order_by("id")] == [
        "patient_session_timeout",
        "session_max_inactive",
    ]


@override_settings(PATIENT_SESSION_MAX_AGE=60)
def test_absolute_lifetime_clears_active_sessions(with_patient_data):
    with_patient_data.rewrite(since=time.time() - 61 * MINUTE, seen=time.time())
    with_patient_data.get("/_test/plain/")
    assert "patient_summary" not in with_patient_data.stored()
    assert CleanupEvent.objects.get().reason == "patient_session_max_age"


def test_inactive_user_loses_patient_data_at_once(with_patient_data, clinician, caplog):
    clinician.is_active = False
    clinician.save()
    key = with_patient_data.session_key
    with caplog.at_level(logging.WARNING, "patient_data.middleware.patient_session_security"):
        with_patient_data.get("/_test/plain/")
    assert "patient_summary" not in with_patient_data.stored()
    assert CleanupEvent.objects.get().reason == "unauthenticated_session"
    warning = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning and warning[0].getMessage().startswith(
        "Cleared patient data from unauthenticated session: "
    )
    assert key not in caplog.text


def test_deleted_user_loses_patient_data(with_patient_data, clinician):
    clinician.delete()
    with_patient_data.get("/_test/plain/")
    assert "patient_summary" not in with_patient_data.stored()


def test_anonymous_session_with_patient_data_is_cleared(driver):
    driver.get("/_test/store/")
    assert "patient_summary" in driver.stored()
    driver.get("/_test/plain/")
    assert "patient_summary" not in driver.stored()
    assert CleanupEvent.objects.get().reason == "unauthenticated_session"


def test_advanced_epoch_voids_older_patient_data(with_patient_data):
    epoch.advance()
    with_patient_data.get("/_test/plain/")
    assert "patient_summary" not in with_patient_data.stored()
    assert CleanupEvent.objects.get().reason == "patient_data_epoch_advanced"
    with_patient_data.get("/_test/store/")  # new data under the new epoch is kept
    with_patient_data.get("/_test/plain/")
    assert "patient_summary" in with_patient_data.stored()


def test_user_request_records_activity(with_patient_data):
    with_patient_data.rewrite(seen=time.time() - 20 * MINUTE)
    with_patient_data.get("/_test/plain/")
    assert time.time() - with_patient_data.stored()[META_KEY]["seen"] < 5


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/_test/passive/", {}),
        ("/_test/sync-passive/", {}),
        ("/_test/plain/", {"X-Patient-Activity": "passive"}),
        ("/api/session-status/", {}),
        ("/static/js/nothing-here.js", {}),
    ],
)
def test_passive_requests_do_not_extend_the_idle_timer(with_patient_data, path, headers):
    old = time.time() - 20 * MINUTE
    with_patient_data.rewrite(seen=old)
    with_patient_data.get(path, headers=headers)
    assert with_patient_data.stored()[META_KEY]["seen"] == old


def test_activity_is_written_at_most_once_per_interval(with_patient_data, monkeypatch):
    """Original defect 4: the session must not be rewritten on every request."""
    from patient_data.sessions.base import GuardedSessionMixin

    saves = []
    real_save = GuardedSessionMixin.save

    def counting_save(self, must_create=False):
        saves.append(1)
        return real_save(self, must_create)

    monkeypatch.setattr(GuardedSessionMixin, "save", counting_save)
    for _ in range(5):
        with_patient_data.get("/_test/plain/")
    assert saves == []  # the store request stamped activity just now
    with_patient_data.rewrite(seen=time.time() - 16)
    saves.clear()
    with_patient_data.get("/_test/plain/")
    with_patient_data.get("/_test/plain/")
    assert saves == [1]  # one activity write for two requests


def test_patient_pages_get_the_security_headers(with_patient_data):
    response = with_patient_data.get("/_test/plain/")
    assert response["X-Patient-Data-Page"] == "true"
    assert response["Cache-Control"] == "no-cache, no-store, must-revalidate"
    assert response["Pragma"] == "no-cache"
    assert response["Expires"] == "0"
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    # same-origin, not no-referrer: with no-referrer a browser sends "Origin: null" on the
    # page's own form POSTs and Django's CSRF check refuses them.
    assert response["Referrer-Policy"] == "same-origin"
    assert "frame-ancestors 'none'" in response["Content-Security-Policy"]


def test_pages_without_patient_data_are_not_marked(logged_in):
    response = logged_in.get("/_test/plain/")
    assert "X-Patient-Data-Page" not in response
    assert "frame-ancestors" not in response.get("Content-Security-Policy", "")


@pytest.mark.parametrize("path", ["/_test/marked/", "/_test/sync-marked/"])
def test_marked_views_get_the_headers_without_data(logged_in, path):
    response = logged_in.get(path)
    assert response["X-Patient-Data-Page"] == "true"


def test_the_path_does_not_decide(logged_in):
    """Original defect 3: /healthcheck counted as a patient page, /patients/ prefixes ruled."""
    response = logged_in.get("/_test/plain/?next=/patients/")
    assert "X-Patient-Data-Page" not in response


def test_anonymous_requests_create_no_session(driver):
    response = driver.get("/_test/plain/")
    assert response.status_code == 200
    assert "sessionid" not in response.cookies


def test_sync_store_api_stamps_bookkeeping(logged_in):
    logged_in.get("/_test/sync-store/")
    meta = logged_in.stored()[META_KEY]
    assert set(meta) >= {"ref", "since", "seen", "gen", "epoch"}


# -- what the middleware announces to the live side (the monitor's group) -------------------


def _announced(driver, path: str) -> list[dict]:
    """The messages a request of ``driver`` to ``path`` sent to the staff monitor's group."""
    layer = get_channel_layer()

    async def listen() -> str:
        channel = await layer.new_channel()
        await layer.group_add(conf.PATIENT_EVENT_GROUP, channel)
        return channel

    async def drain(channel: str) -> list[dict]:
        messages = []
        while True:
            try:
                messages.append(await asyncio.wait_for(layer.receive(channel), 0.3))
            except TimeoutError:
                return messages

    channel = async_to_sync(listen)()
    assert driver.get(path).status_code == 200
    return async_to_sync(drain)(channel)


def _of_type(messages: list[dict], kind: str) -> list[dict]:
    return [message["event"] for message in messages if message["type"] == kind]


def test_storing_patient_data_is_announced_with_its_session_and_user(logged_in):
    [stored] = _of_type(_announced(logged_in, "/_test/store/"), events.STORED_TYPE)
    assert stored["session_ref"] == session_ref(logged_in.session_key)
    assert stored["user"] == "clinician"
    assert stored["items"] == 3
    assert stored["seen"] == logged_in.stored()[META_KEY]["seen"]


def test_a_request_that_stores_nothing_announces_no_storage(with_patient_data):
    with_patient_data.rewrite(seen=time.time() - MINUTE)
    messages = _announced(with_patient_data, "/_test/plain/")
    assert _of_type(messages, events.STORED_TYPE) == []
    assert _of_type(messages, events.ACTIVITY_TYPE)  # the request did announce something


def test_recorded_activity_is_announced_with_its_session_and_time(with_patient_data):
    with_patient_data.rewrite(seen=time.time() - MINUTE)
    [activity] = _of_type(_announced(with_patient_data, "/_test/plain/"), events.ACTIVITY_TYPE)
    assert activity["session_ref"] == session_ref(with_patient_data.session_key)
    assert activity["seen"] == with_patient_data.stored()[META_KEY]["seen"]
    assert time.time() - 5 < activity["seen"] <= time.time()


def test_patient_data_stored_without_a_sign_in_is_announced_without_a_user(driver):
    driver.get("/_test/store/")  # the first store creates the session (nothing to announce yet)
    [stored] = _of_type(_announced(driver, "/_test/store/"), events.STORED_TYPE)
    assert stored["session_ref"] == session_ref(driver.session_key)
    assert stored["user"] == ""


def test_a_timeout_leaves_a_notice_for_the_next_page(with_patient_data):
    with_patient_data.rewrite(seen=time.time() - 31 * MINUTE)
    response = with_patient_data.get("/_test/plain/")
    assert re.fullmatch(r"patient_session_timeout\.\d+", response.cookies[notices.COOKIE].value)
