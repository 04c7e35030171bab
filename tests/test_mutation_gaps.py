"""Behaviour that mutation testing found unpinned (issue 9, items 25-29): each test here fails
when the line it names is changed (see docs/mutation.md).

Runs on the configured database (SQLite by default, PostgreSQL with DATABASE_URL).
"""

from __future__ import annotations

import asyncio
import logging
import time
from importlib import import_module

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.test import override_settings
from django.utils.crypto import salted_hmac

from patient_data import activity, cleanup, guard, index, policy, refs
from patient_data.conf import conf
from patient_data.models import CleanupEvent
from patient_data.refs import session_ref
from patient_data.registry import META_KEY, get_registry
from patient_data.signals import patient_session_cleared
from tests.conftest import Driver, browser_with_patient_data

MINUTE = 60
SERVER_SIDE_ENGINES = [
    "patient_data.sessions.db",
    "patient_data.sessions.cached_db",
    "patient_data.sessions.cache",
    "patient_data.sessions.file",
]
PATIENT_KEYS = {"patient_summary", "current_patient_id", "patient_cda_SYN-XX-000001"}


@pytest.fixture(params=SERVER_SIDE_ENGINES)
def server_side_engine(request, tmp_path):
    with override_settings(SESSION_ENGINE=request.param, SESSION_FILE_PATH=str(tmp_path)):
        yield request.param


def _write_back(session_key: str, copy: dict) -> None:
    """A slow request that loaded ``copy`` earlier saves it now."""
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    store._session_cache = dict(copy)
    store.modified = True
    store.save()


# 25: every cleanup starts a new generation, not only the first one.


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_second_cleanup_voids_a_copy_made_between_the_first_and_the_second(
    server_side_engine, kind, clinician
):
    browser = browser_with_patient_data(clinician, kind)
    assert browser.post("/api/clear-patient-session/").json()["items_cleared"] == 3
    assert browser.get("/_test/store/").status_code == 200  # new data, first generation
    between = browser.stored()
    assert PATIENT_KEYS <= set(between)
    assert browser.post("/api/clear-patient-session/").json()["items_cleared"] == 3
    _write_back(browser.session_key, between)
    assert not PATIENT_KEYS & set(browser.stored())
    assert browser.stored()[META_KEY]["gen"] == 2


def _indexed_ref() -> str:
    [entry] = async_to_sync(index.alist)()
    return entry.session_ref


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_second_clear_of_a_cookie_session_voids_the_cookie_issued_in_between(kind, clinician):
    with override_settings(SESSION_ENGINE="patient_data.sessions.signed_cookies"):
        browser = browser_with_patient_data(clinician, kind)
        clear = async_to_sync(index.aclear_by_ref)
        assert clear(_indexed_ref(), reason="browser_closed", source="presence") == 3
        assert browser.get("/_test/store/").status_code == 200
        between = browser.session_key
        assert PATIENT_KEYS <= set(browser.stored())
        assert clear(_indexed_ref(), reason="browser_closed", source="presence") == 3
        browser.client.cookies[settings.SESSION_COOKIE_NAME] = between
        response = browser.get("/_test/plain/")
        assert response["X-Patient-Session-Cleared"] == "concurrent_cleanup"
        assert not PATIENT_KEYS & set(browser.stored())
        assert browser.stored()[META_KEY]["gen"] == 2


# 26: an older copy coming back after a cleanup, through both stacks (the async one compares
# the generation with guard.acurrent_generation).

COPY_ENGINES = ["patient_data.sessions.signed_cookies", "patient_data.sessions.cached_db"]


def _bring_back(browser: Driver, old_cookie: str, old_copy: dict) -> None:
    """The copy from before the cleanup comes in again: the cookie of an older response, or a
    cache refilled from a row read just before the cleanup."""
    if settings.SESSION_ENGINE.endswith("signed_cookies"):
        browser.client.cookies[settings.SESSION_COOKIE_NAME] = old_cookie
        return
    store = import_module(settings.SESSION_ENGINE).SessionStore(browser.session_key)
    store._cache.set(store.cache_key, old_copy)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("engine", COPY_ENGINES)
def test_an_older_copy_coming_back_after_a_cleanup_loses_its_patient_data(
    driver, engine, clinician
):
    with override_settings(SESSION_ENGINE=engine):
        browser = browser_with_patient_data(clinician, driver.kind)
        old_cookie, old_copy = browser.session_key, browser.stored()
        assert browser.post("/api/clear-patient-session/").json()["items_cleared"] == 3
        _bring_back(browser, old_cookie, old_copy)
        response = browser.get("/_test/whoami/")
        assert response["X-Patient-Session-Cleared"] == "concurrent_cleanup"
        assert response.json() == {"authenticated": True}  # only the patient data went
        assert not PATIENT_KEYS & set(browser.stored())
        assert list(CleanupEvent.objects.order_by("id").values_list("reason", flat=True)) == [
            "manual_cleanup",
            "concurrent_cleanup",
        ]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("engine", COPY_ENGINES)
def test_data_stored_after_a_cleanup_is_not_taken_for_an_older_copy(driver, engine, clinician):
    with override_settings(SESSION_ENGINE=engine):
        browser = browser_with_patient_data(clinician, driver.kind)
        assert browser.post("/api/clear-patient-session/").json()["items_cleared"] == 3
        assert browser.get("/_test/store/").status_code == 200
        response = browser.get("/_test/plain/")
        assert "X-Patient-Session-Cleared" not in response
        assert PATIENT_KEYS <= set(browser.stored())
        assert CleanupEvent.objects.get().reason == "manual_cleanup"


# 27: who and what a cleanup records: actor, source, signal and event arguments.


def _audit() -> list[tuple]:
    return list(
        CleanupEvent.objects.order_by("id").values_list("action", "reason", "source", "actor_id")
    )


@pytest.mark.django_db(transaction=True)
def test_the_api_records_the_signed_in_clinician_as_actor(with_patient_data, clinician):
    assert with_patient_data.post("/api/clear-patient-session/").status_code == 200
    assert _audit() == [("clear_patient_data", "manual_cleanup", "api", clinician.pk)]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ["/_test/logout/", "/_test/alogout/"])
def test_a_logout_records_the_clinician_who_logged_out(with_patient_data, clinician, path):
    with_patient_data.get(path)
    assert _audit() == [("end_session", "logout", "logout", clinician.pk)]


@pytest.mark.django_db(transaction=True)
def test_a_middleware_timeout_records_its_source_and_the_clinician(with_patient_data, clinician):
    with_patient_data.rewrite(seen=time.time() - 31 * MINUTE)
    with_patient_data.get("/_test/plain/")
    assert _audit() == [
        ("clear_patient_data", "patient_session_timeout", "middleware", clinician.pk)
    ]


@pytest.mark.django_db(transaction=True)
def test_a_middleware_end_records_its_source_and_the_clinician(with_patient_data, clinician):
    with_patient_data.rewrite(seen=time.time() - 61 * MINUTE)
    with_patient_data.get("/_test/plain/")
    assert _audit() == [("end_session", "session_max_inactive", "middleware", clinician.pk)]


@pytest.mark.django_db(transaction=True)
def test_an_anonymous_cleanup_records_no_actor(driver):
    driver.get("/_test/store/")
    driver.post("/api/clear-patient-session/")
    assert [actor for *_, actor in _audit()] == [None]


@pytest.mark.django_db(transaction=True)
def test_a_session_without_an_active_user_is_logged_by_its_ref(
    with_patient_data, clinician, caplog
):
    clinician.is_active = False
    clinician.save()
    ref = session_ref(with_patient_data.session_key)
    with caplog.at_level(logging.WARNING, "patient_data.middleware.patient_session_security"):
        with_patient_data.get("/_test/plain/")
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"Cleared patient data from unauthenticated session: {ref}"
    ]


class Received:
    """The keyword arguments of every ``patient_session_cleared`` sent meanwhile."""

    def __init__(self):
        self.calls: list[tuple[object, dict]] = []

    def __call__(self, sender, signal, **kwargs):
        self.calls.append((sender, kwargs))

    def __enter__(self) -> Received:
        patient_session_cleared.connect(self)
        return self

    def __exit__(self, *exc) -> None:
        patient_session_cleared.disconnect(self)


def _expected(browser: Driver, clinician, action: str, reason: str, source: str) -> dict:
    return {
        "action": action,
        "reason": reason,
        "source": source,
        "items_cleared": 3,
        "keys": ("current_patient_id", "patient_cda_*", "patient_summary"),
        "session_ref": session_ref(browser.session_key),
        "actor_id": clinician.pk,
        "client_hint": None,
    }


@pytest.mark.django_db(transaction=True)
def test_the_cleared_signal_carries_every_field_of_the_cleanup(with_patient_data, clinician):
    expected = _expected(
        with_patient_data, clinician, "clear_patient_data", "manual_cleanup", "api"
    )
    with Received() as received:
        with_patient_data.post("/api/clear-patient-session/")
    assert received.calls == [(cleanup.Cleanup, expected)]


@pytest.mark.django_db(transaction=True)
def test_the_cleared_signal_of_a_sync_logout_carries_every_field(clinician):
    browser = browser_with_patient_data(clinician, "sync")
    expected = _expected(browser, clinician, "end_session", "logout", "logout")
    with Received() as received:
        browser.get("/_test/logout/")
    assert received.calls == [(cleanup.Cleanup, expected)]


async def _listening() -> tuple[object, str]:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(conf.PATIENT_EVENT_GROUP, channel)
    return layer, channel


@pytest.mark.django_db(transaction=True)
def test_a_sync_cleanup_publishes_the_cleanup_as_its_event(clinician):
    layer, channel = async_to_sync(_listening)()
    browser = browser_with_patient_data(clinician, "sync")
    expected = _expected(browser, clinician, "end_session", "logout", "logout")
    browser.get("/_test/logout/")

    async def cleanup_event() -> dict:
        while True:
            message = await asyncio.wait_for(layer.receive(channel), timeout=5)
            if message["type"] == "patient_session.event":
                return message["event"]

    assert async_to_sync(cleanup_event)() == {**expected, "keys": list(expected["keys"])}


# 28: patient-page headers kept apart from a view's own, and nothing added to a normal page.

ROOT = "tests.mutation_urls"


@pytest.mark.django_db
@override_settings(ROOT_URLCONF=ROOT)
def test_a_patient_page_keeps_its_own_policy_and_forbids_framing(logged_in):
    response = logged_in.get("/_test/own-csp/")
    assert response["Content-Security-Policy"] == (
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
    )


@pytest.mark.django_db
@override_settings(ROOT_URLCONF=ROOT)
def test_only_separators_are_trimmed_from_a_patient_page_policy(logged_in):
    response = logged_in.get("/_test/own-reporting/")
    assert response["Content-Security-Policy"] == (
        "default-src 'self'; report-to csp-endpoint-X; frame-ancestors 'none'"
    )


@pytest.mark.django_db
@override_settings(ROOT_URLCONF=ROOT)
def test_a_patient_page_with_its_own_frame_ancestors_is_left_alone(logged_in):
    response = logged_in.get("/_test/own-frame-ancestors/")
    assert response["Content-Security-Policy"] == "default-src 'self'; frame-ancestors 'self'"


@pytest.mark.django_db
def test_a_patient_page_without_a_policy_gets_frame_ancestors_none(logged_in):
    response = logged_in.get("/_test/marked/")
    assert response["Content-Security-Policy"] == "frame-ancestors 'none'"


@pytest.mark.django_db
def test_a_normal_response_says_nothing_was_cleared(with_patient_data):
    response = with_patient_data.get("/_test/plain/")
    assert response.status_code == 200
    assert "X-Patient-Session-Cleared" not in response
    assert "Clear-Site-Data" not in response
    assert PATIENT_KEYS <= set(with_patient_data.stored())


# 29: each limit applies exactly at its boundary.

NOW = 1_000_000_000.0


def _judge(**meta_and_facts) -> policy.Verdict:
    facts = {"has_patient_data": True, "claims_auth": True}
    meta = {key: meta_and_facts.pop(key) for key in ("seen", "since", "login", "gen", "epoch")
            if key in meta_and_facts}  # fmt: skip
    return policy.judge(policy.Facts(now=NOW, meta=meta, **{**facts, **meta_and_facts}))


@override_settings(PATIENT_SESSION_TIMEOUT=30, PATIENT_MAX_INACTIVE_TIME=60)
def test_patient_data_idle_exactly_the_timeout_is_cleared():
    assert _judge(seen=NOW - 30 * MINUTE) == policy.CLEAR_IDLE
    assert _judge(seen=NOW - 30 * MINUTE + 1) == policy.KEEP_VERDICT
    with override_settings(PATIENT_SESSION_TIMEOUT=1 / 60):  # one second
        assert _judge(seen=NOW) == policy.KEEP_VERDICT  # seen this very second: not idle
        assert _judge(seen=NOW - 1) == policy.CLEAR_IDLE


@override_settings(PATIENT_SESSION_TIMEOUT=30, PATIENT_MAX_INACTIVE_TIME=60)
def test_a_session_idle_exactly_the_max_inactive_time_is_ended():
    assert _judge(seen=NOW - 60 * MINUTE) == policy.END_MAX_INACTIVE
    assert _judge(seen=NOW - 60 * MINUTE + 1) == policy.CLEAR_IDLE
    no_data = {"has_patient_data": False}
    assert _judge(seen=NOW - 60 * MINUTE, **no_data) == policy.END_MAX_INACTIVE
    assert _judge(seen=NOW - 60 * MINUTE + 1, **no_data) == policy.KEEP_VERDICT


@override_settings(PATIENT_SESSION_MAX_AGE=12 * 60)
def test_patient_data_exactly_the_max_age_old_is_cleared():
    assert _judge(seen=NOW, since=NOW - 12 * 60 * MINUTE) == policy.CLEAR_MAX_AGE
    assert _judge(seen=NOW, since=NOW - 12 * 60 * MINUTE + 1) == policy.KEEP_VERDICT


@override_settings(PATIENT_SESSION_ABSOLUTE_MAX_AGE=8 * 60)
def test_a_login_exactly_the_absolute_lifetime_old_is_ended():
    assert _judge(seen=NOW, login=NOW - 8 * 60 * MINUTE) == policy.Verdict(
        policy.END, "session_max_age"
    )
    assert _judge(seen=NOW, login=NOW - 8 * 60 * MINUTE + 1) == policy.KEEP_VERDICT
    anonymous = _judge(seen=NOW, login=NOW - 8 * 60 * MINUTE, claims_auth=False)
    assert anonymous == policy.KEEP_VERDICT


def test_a_copy_one_generation_behind_or_of_an_ended_session_is_void():
    assert _judge(seen=NOW, ended=True) == policy.Verdict(policy.END, "session_ended")
    assert _judge(seen=NOW, gen=1, stored_generation=2) == policy.Verdict(
        policy.CLEAR, "concurrent_cleanup"
    )
    assert _judge(seen=NOW, gen=2, stored_generation=2) == policy.KEEP_VERDICT
    assert _judge(seen=NOW, epoch=1, current_epoch=2) == policy.Verdict(
        policy.CLEAR, "patient_data_epoch_advanced"
    )
    assert _judge(seen=NOW, epoch=2, current_epoch=2) == policy.KEEP_VERDICT
    # Bookkeeping without a stamp predates every cleanup and epoch: void once either moved.
    assert _judge(seen=NOW, stored_generation=1).reason == "concurrent_cleanup"
    assert _judge(seen=NOW, current_epoch=1).reason == "patient_data_epoch_advanced"


def test_patient_data_is_cleared_exactly_when_the_user_is_no_longer_active():
    assert _judge(seen=NOW, user_ok=False) == policy.Verdict(
        policy.CLEAR, "unauthenticated_session"
    )
    assert _judge(seen=NOW, user_ok=False, has_patient_data=False) == policy.KEEP_VERDICT


def test_a_stamp_exactly_the_tolerance_ahead_is_trusted_and_one_beyond_is_not():
    tolerance = policy.FUTURE_STAMP_TOLERANCE
    assert policy.elapsed(NOW, NOW + tolerance) == 0.0
    assert policy.elapsed(NOW, NOW + tolerance + 1) == float("inf")
    assert policy.elapsed(NOW, NOW - 5) == 5.0
    assert policy.elapsed(NOW, None) is None
    assert _judge(seen=NOW + tolerance + 1) == policy.END_MAX_INACTIVE


@override_settings(PATIENT_ACTIVITY_WRITE_INTERVAL=15)
def test_activity_is_written_again_exactly_after_the_write_interval():
    assert policy.activity_due({"seen": NOW - 15}, NOW)
    assert not policy.activity_due({"seen": NOW - 14}, NOW)
    assert policy.activity_due({}, NOW)
    assert policy.activity_due({"seen": NOW + 1}, NOW)  # ahead of the clock: rewritten
    assert not policy.activity_due({"seen": NOW}, NOW)


@pytest.mark.parametrize(
    ("data", "stamp"),
    [
        ({}, None),
        ({"note": "x"}, None),
        # A login without a recorded start has its absolute lifetime start now.
        ({SESSION_KEY: "7"}, {"seen": NOW, "login": NOW}),
        ({"patient_summary": {}}, {"seen": NOW}),
        ({SESSION_KEY: "7", "patient_summary": {}}, {"seen": NOW, "login": NOW}),
    ],
)
def test_only_signed_in_sessions_or_sessions_with_patient_data_get_an_activity_stamp(data, stamp):
    assert activity.stamped(data, NOW) == stamp


def test_a_recent_stamp_is_not_written_again():
    data = {SESSION_KEY: "7", META_KEY: {"seen": NOW - 1, "ref": "r", "login": NOW - 9}}
    assert activity.stamped(data, NOW) is None
    data[META_KEY]["seen"] = NOW - conf.PATIENT_ACTIVITY_WRITE_INTERVAL
    assert activity.stamped(data, NOW) == {"seen": NOW, "ref": "r", "login": NOW - 9}


def test_a_stamp_keeps_the_rest_of_the_bookkeeping():
    session_data = {"patient_summary": {}, META_KEY: {"ref": "r", "gen": 3}}
    assert activity.stamped(session_data, NOW) == {"ref": "r", "gen": 3, "seen": NOW}


# Keyed hashes other than the session's (found by `make mutation` on refs.py).


def test_address_refs_are_keyed_hashes_under_their_own_salt():
    secret = conf.PATIENT_SESSION_HASH_KEY
    expected = salted_hmac(
        "patient_data.address_ref", "127.0.0.1", secret=secret, algorithm="sha256"
    )
    assert refs.address_ref("127.0.0.1") == expected.hexdigest()[: refs.REF_LENGTH]
    assert refs.address_ref("127.0.0.1") != refs.session_ref("127.0.0.1")


# What the registry counts (found by `make mutation` on registry.py).


def test_the_registry_finds_exact_and_prefixed_patient_keys_in_order():
    keys = ["note", "patient_cda_SYN-1", "_auth_user_id", "patient_summary", "my_patient"]
    assert get_registry().patient_keys(keys) == ["patient_cda_SYN-1", "patient_summary"]


def test_registry_entries_go_on_after_an_exact_key():
    keys = ["patient_summary", "note", "patient_cda_SYN-1"]
    assert get_registry().entries(keys) == ["patient_cda_*", "patient_summary"]


# Found by `make mutation` on enforcement.py.

ALLOW_INACTIVE = "django.contrib.auth.backends.AllowAllUsersModelBackend"


@pytest.mark.django_db(transaction=True)
def test_an_inactive_user_loses_patient_data_under_a_backend_that_lets_inactive_users_in(
    driver, clinician
):
    with override_settings(AUTHENTICATION_BACKENDS=[ALLOW_INACTIVE]):
        browser = browser_with_patient_data(clinician, driver.kind)
        clinician.is_active = False
        clinician.save()
        response = browser.get("/_test/plain/")
        assert response["X-Patient-Session-Cleared"] == "unauthenticated_session"
        assert not PATIENT_KEYS & set(browser.stored())


@pytest.mark.django_db(transaction=True)
def test_the_policy_still_applies_under_an_unguarded_session_engine(driver, clinician):
    with override_settings(SESSION_ENGINE="django.contrib.sessions.backends.db"):
        browser = browser_with_patient_data(clinician, driver.kind)
        browser.rewrite(seen=time.time() - 31 * MINUTE)
        response = browser.get("/_test/plain/")
        assert response["X-Patient-Session-Cleared"] == "patient_session_timeout"
        assert not PATIENT_KEYS & set(browser.stored())


# Found by `make mutation` on guard.py.


def test_a_cleanup_writes_the_stored_session_with_its_own_changes_and_no_patient_data():
    loaded = {"a": 1, "b": 1, "gone": 1, "patient_summary": {}}
    mine = {"a": 2, "b": 1, "new": 1}  # changed a, removed gone, added new
    stored = {"a": 1, "b": 5, "gone": 1, "other": 7, "patient_summary": {}}
    assert guard.merged(mine, loaded, stored) == {"a": 2, "b": 5, "other": 7, "new": 1}
    assert guard.merged({"a": 2, "patient_summary": {}}, None, stored) == {"a": 2}


def test_a_stale_blob_loses_its_patient_data_and_says_how_much(caplog):
    data = {"patient_summary": {}, "current_patient_id": "SYN", "note": "kept"}
    with caplog.at_level(logging.INFO, "patient_data.guard"):
        assert guard.strip_stale(data, 1) == 2
    assert data == {"note": "kept", META_KEY: {"gen": 1}}
    assert caplog.messages == [
        "Dropped 2 patient data items a concurrent request tried to write back after a cleanup."
    ]
    current = {"patient_summary": {}, META_KEY: {"gen": 3}}
    assert guard.strip_stale(current, 3) == 0
    assert "patient_summary" in current
    unstamped = {"patient_summary": {}}
    assert guard.strip_stale(unstamped, 0) == 0  # no cleanup yet: nothing is stale
    assert "patient_summary" in unstamped


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("chunk", [1, 500])
def test_a_bulk_cleanup_starts_the_next_generation_of_each_session_once(chunk):
    assert guard.bump_many(["r2", "r1", "r2"], chunk=chunk) == {"r1": 1, "r2": 1}
    assert guard.bump_many(["r1", "r2", "r3"], chunk=chunk) == {"r1": 2, "r2": 2, "r3": 1}
