"""Session lifetime and resurrection (issue 9, items 1-4, 6, 7 and 23).

An ended session stays ended on every engine, also for an older copy (a replayed signed
cookie, another process's cached copy); ending it twice is a no-op; the login has an absolute
lifetime; a request-path cleanup keeps a concurrent change; stamps from the future fail closed.
"""

from __future__ import annotations

import datetime
import time
from importlib import import_module

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.contrib.auth import alogin
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.sessions.models import Session
from django.test import RequestFactory, override_settings
from django.utils import timezone

from patient_data import cleanup, enforcement, guard, patient_session, policy, revocation
from patient_data.models import CleanupEvent, EndedSession, PatientSessionState
from patient_data.refs import session_ref
from patient_data.registry import META_KEY
from patient_data.signals import patient_session_cleared
from tests import urls as test_urls
from tests.conftest import Driver
from tests.engine_support import engine_fixture, engine_name  # noqa: F401 - "engine"

MINUTE = 60
STATUS = "/api/session-status/"


def _signed_in(kind: str, user, *, patient_data: bool = True) -> Driver:
    browser = Driver(kind)
    browser.force_login(user)
    if patient_data:
        assert browser.get("/_test/store/").status_code == 200
    return browser


def _copy_elsewhere(engine, key: str) -> dict:
    """What another process may still hold of the session: its cached copy (cached_db)."""
    return engine.SessionStore(key).load()


def _replay(browser: Driver, engine, key: str, copy: dict) -> None:
    """Present an older copy of the session: its cookie, and for cached_db the stale cache
    entry another process (local-memory cache) may still hold."""
    if engine_name(engine) == "cached_db":
        store = engine.SessionStore(key)
        store._cache.set(store.cache_key, copy)
    browser.client.cookies[settings.SESSION_COOKIE_NAME] = key


def _status(browser: Driver) -> dict:
    return browser.get(STATUS).json()


ENDINGS = {
    "logout": ("post", "/_test/logout/"),
    "async logout": ("post", "/_test/alogout/"),
    "emergency cleanup": ("post", "/api/emergency-session-cleanup/"),
    "login as someone else": ("get", "/_test/login-other/"),
}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("ending", list(ENDINGS))
def test_an_ended_session_holding_patient_data_stays_ended_for_an_older_copy(
    engine, kind, ending, clinician
):
    browser = _signed_in(kind, clinician)
    old_key = browser.session_key
    copy = _copy_elsewhere(engine, old_key)
    method, path = ENDINGS[ending]
    getattr(browser, method)(path)
    _replay(browser, engine, old_key, copy)
    status = _status(browser)
    assert status["has_patient_data"] is False
    assert status["authenticated"] is False


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("ending", ["logout", "emergency cleanup"])
def test_an_ended_login_without_patient_data_stays_ended(engine, kind, ending, clinician):
    browser = _signed_in(kind, clinician, patient_data=False)
    old_key = browser.session_key
    copy = _copy_elsewhere(engine, old_key)
    method, path = ENDINGS[ending]
    getattr(browser, method)(path)
    _replay(browser, engine, old_key, copy)
    assert browser.get("/_test/whoami/").json() == {"authenticated": False}


@pytest.mark.django_db
def test_a_replayed_ended_cookie_is_logged_out_without_a_second_record(clinician):
    with override_settings(SESSION_ENGINE="patient_data.sessions.signed_cookies"):
        browser = _signed_in("sync", clinician)
        old_cookie = browser.session_key
        browser.post("/_test/logout/")
        browser.client.cookies[settings.SESSION_COOKIE_NAME] = old_cookie
        assert browser.get("/_test/whoami/").json() == {"authenticated": False}
        assert [(e.action, e.reason) for e in CleanupEvent.objects.all()] == [
            ("end_session", "logout")
        ]


@pytest.mark.django_db
def test_revocations_expire_with_the_cookie_and_are_purged():
    past = timezone.now() - datetime.timedelta(seconds=1)
    EndedSession.objects.create(ref="a" * 32, expires_at=past)
    assert not revocation.is_ended("a" * 32)
    with override_settings(SESSION_COOKIE_AGE=600):
        revocation.revoke("b" * 32)
    assert list(EndedSession.objects.values_list("ref", flat=True)) == ["b" * 32]
    kept_until = EndedSession.objects.get().expires_at
    assert 599 <= (kept_until - timezone.now()).total_seconds() <= 600
    assert revocation.is_ended("b" * 32)


@pytest.mark.parametrize("patient_data", [True, False])
def test_an_end_advances_the_generation_only_of_data_that_had_one(driver, clinician, patient_data):
    driver.force_login(clinician)
    if patient_data:
        driver.get("/_test/store/")
    ref = driver.stored()[META_KEY]["ref"]
    before = guard.current_generation(ref)
    driver.post("/_test/logout/")
    assert revocation.is_ended(ref)
    if patient_data:
        assert guard.current_generation(ref) > before
    else:
        assert not PatientSessionState.objects.filter(ref=ref).exists()


# -- item 3: two requests of one session after PATIENT_MAX_INACTIVE_TIME -------------------


def _loaded_request(engine, key: str):
    request = RequestFactory().get("/_test/plain/")
    request.session = engine.SessionStore(key)
    AuthenticationMiddleware(lambda r: None).process_request(request)
    return request


def _idle_session(engine, clinician, patient_data: bool = True) -> str:
    """The key of a signed-in session, idle past the max-inactive time (a new key for a signed
    cookie: its content is its key)."""
    browser = _signed_in("sync", clinician, patient_data=patient_data)
    store = engine.SessionStore(browser.session_key)
    data = store.load()
    data[META_KEY] = {**data[META_KEY], "seen": time.time() - 61 * MINUTE}
    store._session_cache = data
    store.save()
    return store.session_key


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("patient_data", [True, False])
def test_two_requests_after_max_inactive_end_the_session_once(engine, clinician, patient_data):
    key = _idle_session(engine, clinician, patient_data)
    first, second = _loaded_request(engine, key), _loaded_request(engine, key)
    list(first.session.items())
    list(second.session.items())
    assert enforcement.enforce(first).reason == "session_max_inactive"
    enforcement.enforce(second)  # the row is gone: no UpdateError
    assert not second.user.is_authenticated
    assert "patient_summary" not in dict(second.session.items())
    assert list(CleanupEvent.objects.values_list("reason", flat=True)) == ["session_max_inactive"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("patient_data", [True, False])
async def test_two_async_requests_after_max_inactive_end_the_session_once(
    engine, clinician, patient_data
):
    key = await sync_to_async(_idle_session)(engine, clinician, patient_data)
    first, second = _loaded_request(engine, key), _loaded_request(engine, key)
    await first.session.aitems()
    await second.session.aitems()
    assert (await enforcement.aenforce(first)).reason == "session_max_inactive"
    await enforcement.aenforce(second)
    assert not (await second.auser()).is_authenticated
    assert "patient_summary" not in dict(await second.session.aitems())
    reasons = [reason async for reason in CleanupEvent.objects.values_list("reason", flat=True)]
    assert reasons == ["session_max_inactive"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_cleanup_of_a_session_removed_meanwhile_logs_the_request_out(engine, kind, clinician):
    if engine_name(engine) == "signed_cookies":
        pytest.skip("nothing server-side to remove")
    key = _signed_in("sync", clinician).session_key
    request = _loaded_request(engine, key)
    list(request.session.items())
    engine.SessionStore(key).delete()
    if kind == "sync":
        assert cleanup.clear_patient_session_data(request) == 0
    else:
        assert async_to_sync(cleanup.aclear_patient_session_data)(request) == 0
    assert not request.user.is_authenticated
    assert not CleanupEvent.objects.exists()


# -- item 4: absolute lifetime of the login -------------------------------------------------


def test_a_login_stamps_its_time_and_a_ref(logged_in):
    meta = logged_in.stored()[META_KEY]
    assert time.time() - meta["login"] < 5
    assert len(meta["ref"]) == 32


@pytest.mark.django_db(transaction=True)
async def test_an_async_login_stamps_its_time_and_a_ref(engine, clinician):
    request = RequestFactory().get("/")
    request.session = engine.SessionStore()
    await alogin(request, clinician, backend="django.contrib.auth.backends.ModelBackend")
    meta = await request.session.aget(META_KEY)
    assert time.time() - meta["login"] < 5
    assert len(meta["ref"]) == 32


@override_settings(PATIENT_SESSION_ABSOLUTE_MAX_AGE=120)
def test_the_absolute_lifetime_forces_a_new_login_whatever_the_activity(logged_in, clinician):
    logged_in.rewrite(login=time.time() - 121 * MINUTE, seen=time.time())
    response = logged_in.get("/_test/whoami/")
    assert response.json() == {"authenticated": False}
    assert response["X-Patient-Session-Cleared"] == "session_max_age"
    event = CleanupEvent.objects.get()
    assert (event.action, event.reason, event.source) == (
        "end_session",
        "session_max_age",
        "middleware",
    )
    logged_in.force_login(clinician)  # a new login starts a new lifetime
    assert logged_in.get("/_test/whoami/").json() == {"authenticated": True}


@override_settings(PATIENT_SESSION_ABSOLUTE_MAX_AGE=120)
def test_a_login_within_its_lifetime_is_kept(with_patient_data):
    with_patient_data.rewrite(login=time.time() - 119 * MINUTE)
    assert with_patient_data.get("/_test/whoami/").json() == {"authenticated": True}
    assert "patient_summary" in with_patient_data.stored()


@override_settings(PATIENT_SESSION_ABSOLUTE_MAX_AGE=120, PATIENT_SESSION_MAX_AGE=720)
def test_the_session_lifetime_is_separate_from_the_patient_data_lifetime():
    now = 10_000_000.0
    meta = {"login": now - 121 * MINUTE, "seen": now, "since": now}
    facts = policy.Facts(now=now, meta=meta, has_patient_data=True, claims_auth=True)
    assert policy.judge(facts) == policy.Verdict(policy.END, "session_max_age")
    fresh = {**meta, "login": now, "since": now - 721 * MINUTE}
    facts = policy.Facts(now=now, meta=fresh, has_patient_data=True, claims_auth=True)
    assert policy.judge(facts) == policy.Verdict(policy.CLEAR, "patient_session_max_age")


# -- item 7: stamps from the future (stepped clock) ----------------------------------------


class SteppedClock:
    """``time`` for the modules that judge and stamp, with the clock stepped back."""

    def __init__(self, step: float) -> None:
        self.step = step

    def time(self) -> float:
        return time.time() - self.step


@pytest.fixture
def stepped_back(monkeypatch):
    def step(seconds: float) -> None:
        clock = SteppedClock(seconds)
        monkeypatch.setattr("patient_data.enforcement.time", clock)
        monkeypatch.setattr("patient_data.middleware.patient_session_security.time", clock)

    return step


def test_a_clock_stepped_back_does_not_disable_the_idle_timers(with_patient_data, stepped_back):
    stepped_back(2 * 60 * MINUTE)  # every stamp now lies two hours ahead
    assert with_patient_data.get("/_test/whoami/").json() == {"authenticated": False}
    assert CleanupEvent.objects.get().reason == "session_max_inactive"


def test_a_small_skew_is_tolerated_and_the_stamp_rewritten(with_patient_data, stepped_back):
    with_patient_data.rewrite(seen=time.time() + 30)  # a node 30 s ahead wrote it
    stepped_back(0)
    assert with_patient_data.get("/_test/whoami/").json() == {"authenticated": True}
    assert with_patient_data.stored()[META_KEY]["seen"] <= time.time()
    assert "patient_summary" in with_patient_data.stored()


@pytest.mark.parametrize(
    ("stamp", "verdict"),
    [
        ("seen", policy.Verdict(policy.END, "session_max_inactive")),
        ("login", policy.Verdict(policy.END, "session_max_age")),
        ("since", policy.Verdict(policy.CLEAR, "patient_session_max_age")),
    ],
)
def test_each_stamp_far_in_the_future_reads_as_expired(stamp, verdict):
    now = 10_000_000.0
    meta = {"seen": now, "login": now, "since": now, stamp: now + 3600}
    facts = policy.Facts(now=now, meta=meta, has_patient_data=True, claims_auth=True)
    assert policy.judge(facts) == verdict


def test_a_future_stamp_is_rewritten_at_the_next_activity():
    assert policy.activity_due({"seen": 1000.0 + 1}, 1000.0)
    assert not policy.activity_due({"seen": 1000.0 - 1}, 1000.0)


# -- item 6: a request-path cleanup compares and sets ----------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_cleanup_keeps_a_change_saved_meanwhile(engine):
    if engine_name(engine) == "signed_cookies":
        pytest.skip("a cookie has no concurrent writer server-side")
    session = engine.SessionStore()
    patient_session.store(session, "patient_summary", {"problems": ["SYNTH-P"]})
    session["theme"] = "light"
    session.save()
    slow = engine.SessionStore(session.session_key)
    list(slow.items())  # loaded before the other request's change
    other = engine.SessionStore(session.session_key)
    other["theme"] = "dark"
    other.save()
    slow["draft"] = "the slow request's own change"
    assert cleanup.clear_patient_session_data(slow) == 1
    stored = engine.SessionStore(session.session_key).load()
    assert stored["theme"] == "dark"
    assert stored["draft"] == "the slow request's own change"
    assert "patient_summary" not in stored


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_preference_saved_during_a_request_path_cleanup_survives(kind, clinician):
    tab_one = _signed_in(kind, clinician)
    tab_two = Driver(kind)
    tab_two.client.cookies = tab_one.client.cookies
    path = "/_test/slow-clear/" if kind == "sync" else "/_test/aslow-clear/"
    with test_urls.slow_request(tab_one, path) as result:
        assert tab_two.get("/_test/note/?value=dark").status_code == 200
    assert result["r"].status_code == 200
    stored = tab_one.stored()
    assert stored["note"] == "dark"
    assert "patient_summary" not in stored


# -- item 23: an older signed cookie replayed does not void the owner's current one --------


@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_replaying_an_older_cookie_leaves_the_owners_new_search_alone(kind, clinician):
    with override_settings(SESSION_ENGINE="patient_data.sessions.signed_cookies"):
        browser = _signed_in(kind, clinician)
        older = browser.session_key
        browser.post("/api/clear-patient-session/")
        browser.get("/_test/store/")  # the owner searches again
        current = browser.session_key
        browser.client.cookies[settings.SESSION_COOKIE_NAME] = older
        assert browser.get(STATUS).json()["has_patient_data"] is False
        browser.client.cookies[settings.SESSION_COOKIE_NAME] = current
        response = browser.get(STATUS)
        assert response.json()["has_patient_data"] is True
        assert "X-Patient-Session-Cleared" not in response


@pytest.mark.django_db
def test_a_removed_row_behind_a_stale_cache_copy_answers_without_error(clinician):
    """Item 21: cached_db with a per-process cache, after a bulk removal of the row."""
    with override_settings(SESSION_ENGINE="patient_data.sessions.cached_db"):
        browser = _signed_in("sync", clinician)
        key = browser.session_key
        copy = import_module(settings.SESSION_ENGINE).SessionStore(key).load()
        cleanup.clear_patient_session_data(import_module(settings.SESSION_ENGINE).SessionStore(key))
        Session.objects.filter(session_key=key).delete()
        store = import_module(settings.SESSION_ENGINE).SessionStore(key)
        store._cache.set(store.cache_key, copy)  # another process's copy
        response = browser.get(STATUS)
        assert response.status_code == 200
        assert response.json()["has_patient_data"] is False


def test_a_login_without_a_stamp_gets_one_at_its_next_activity(logged_in):
    store = import_module(settings.SESSION_ENGINE).SessionStore(logged_in.session_key)
    data = store.load()
    data[META_KEY] = {"ref": data[META_KEY]["ref"], "seen": time.time() - 20}  # an older login
    store._session_cache = data
    store.save()
    logged_in.get("/_test/plain/")
    assert time.time() - logged_in.stored()[META_KEY]["login"] < 5


@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_password_changed_elsewhere_ends_the_session_and_the_loss_is_recorded(clinician, kind):
    # Django's own user lookup flushes a session whose authentication hash no longer verifies,
    # patient data included, before any cleanup of ours runs: the loss must still be audited
    # and announced to that session's sockets (its old ref), not pass unrecorded.
    browser = _signed_in(kind, clinician)
    ref = session_ref(browser.session_key)
    announced = []

    def receiver(sender, signal, **kwargs):
        announced.append((kwargs["action"], kwargs["session_ref"], kwargs["items_cleared"]))

    clinician.set_password("changed-elsewhere-2")
    clinician.save()
    patient_session_cleared.connect(receiver)
    try:
        assert browser.get("/_test/whoami/").json() == {"authenticated": False}
    finally:
        patient_session_cleared.disconnect(receiver)
    assert "patient_summary" not in browser.stored()
    [event] = CleanupEvent.objects.all()
    recorded = (event.action, event.reason, event.source, event.items_cleared, event.session_ref)
    assert recorded == ("end_session", "unauthenticated_session", "middleware", 3, ref)
    assert announced == [("end_session", ref, 3)]
