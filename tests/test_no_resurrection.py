"""Original defect 14: a request that loaded the session before a cleanup wrote it back.

Runs on whatever database the suite is configured with (SQLite by default, PostgreSQL when
DATABASE_URL is set: .ci/run runs both).
"""

from __future__ import annotations

from importlib import import_module

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import override_settings

from patient_data import cleanup, patient_session
from patient_data.models import CleanupEvent
from patient_data.registry import META_KEY
from tests import urls as test_urls
from tests.conftest import Driver, browser_with_patient_data

ENGINES = [
    "patient_data.sessions.db",
    "patient_data.sessions.cached_db",
    "patient_data.sessions.cache",
    "patient_data.sessions.file",
]


@pytest.fixture(params=ENGINES)
def engine(request, tmp_path):
    with override_settings(SESSION_ENGINE=request.param, SESSION_FILE_PATH=str(tmp_path)):
        yield import_module(request.param)


def _session_with_patient_data(engine):
    session = engine.SessionStore()
    patient_session.store(session, "patient_summary", {"problems": ["SYNTH-P"]})
    session["note"] = "original"
    session.save()
    return session.session_key


@pytest.mark.django_db(transaction=True)
def test_stale_copy_cannot_write_patient_data_back(engine):
    key = _session_with_patient_data(engine)
    stale = engine.SessionStore(key)
    stale._session_cache = stale.load()  # loaded before the cleanup
    assert (
        cleanup.clear_patient_session_data(
            engine.SessionStore(key), reason="manual_cleanup", source="api"
        )
        == 1
    )
    stale["note"] = "changed by the slow request"
    stale.save()
    stored = engine.SessionStore(key).load()
    assert "patient_summary" not in stored
    assert stored["note"] == "changed by the slow request"


@pytest.mark.django_db(transaction=True)
def test_fresh_data_after_the_cleanup_is_kept(engine):
    key = _session_with_patient_data(engine)
    cleanup.clear_patient_session_data(engine.SessionStore(key))
    fresh = engine.SessionStore(key)
    patient_session.store(fresh, "patient_summary", {"problems": ["SYNTH-Q"]})
    fresh.save()
    assert engine.SessionStore(key).load()["patient_summary"] == {"problems": ["SYNTH-Q"]}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_slow_request_during_a_cleanup(kind):
    """A real request holds the session while the API clears it from another tab."""
    user = get_user_model().objects.create_user("slow", password="synthetic-pass-1")
    tab_one, tab_two = Driver(kind), Driver(kind)
    tab_one.force_login(user)
    tab_one.get("/_test/store/")
    tab_two.client.cookies = tab_one.client.cookies
    with test_urls.slow_request(tab_one, "/_test/slow-note/") as result:
        cleared = tab_two.post("/api/clear-patient-session/")
        assert cleared.json() == {"success": True, "items_cleared": 3}
    assert result["r"].status_code == 200
    stored = tab_one.stored()
    assert "patient_summary" not in stored
    assert "current_patient_id" not in stored
    assert stored["note"] == "written-by-slow-request"
    assert stored["_auth_user_id"] == str(user.pk)


@pytest.mark.django_db
def test_stale_signed_cookie_is_voided_on_the_way_in(clinician):
    with override_settings(SESSION_ENGINE="patient_data.sessions.signed_cookies"):
        browser = browser_with_patient_data(clinician)
        old_cookie = browser.session_key
        assert browser.post("/api/clear-patient-session/").json()["items_cleared"] == 3
        # a response built before the cleanup delivers the old cookie after it
        browser.client.cookies[settings.SESSION_COOKIE_NAME] = old_cookie
        response = browser.get("/_test/plain/")
        assert response["X-Patient-Session-Cleared"] == "concurrent_cleanup"
        assert "patient_summary" not in browser.stored()
        assert [e.reason for e in CleanupEvent.objects.order_by("id")] == [
            "manual_cleanup",
            "concurrent_cleanup",
        ]


@pytest.mark.django_db
def test_cleanup_bumps_the_generation(engine):
    key = _session_with_patient_data(engine)
    cleanup.clear_patient_session_data(engine.SessionStore(key))
    cleanup.clear_patient_session_data(engine.SessionStore(key))
    meta = engine.SessionStore(key).load()[META_KEY]
    assert meta["gen"] == 1  # the second cleanup found nothing to clear


@pytest.mark.django_db
def test_stale_cache_copy_of_a_cached_db_session_is_voided_on_the_way_in(clinician):
    """A request that read the row just before a cleanup can refill the cache with it."""
    with override_settings(SESSION_ENGINE="patient_data.sessions.cached_db"):
        browser = browser_with_patient_data(clinician)
        store = import_module(settings.SESSION_ENGINE).SessionStore(browser.session_key)
        old_copy = store.load()
        assert cleanup.clear_patient_session_data(store) == 3
        store._cache.set(store.cache_key, old_copy)  # the late refill
        response = browser.get("/_test/plain/")
        assert response["X-Patient-Session-Cleared"] == "concurrent_cleanup"
        assert "patient_summary" not in browser.stored()
        assert "patient_summary" not in store._cache.get(store.cache_key)
