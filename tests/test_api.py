"""The cleanup HTTP API: CSRF, methods, JSON errors, Clear-Site-Data."""

from __future__ import annotations

import time

import pytest
from django.middleware.csrf import get_token
from django.test import RequestFactory

from patient_data import cleanup
from patient_data.models import CleanupEvent
from tests.conftest import browser_with_patient_data

CLEAR = "/api/clear-patient-session/"
EMERGENCY = "/api/emergency-session-cleanup/"


def test_clear_returns_the_item_count(with_patient_data):
    response = with_patient_data.post(CLEAR)
    assert response.status_code == 200
    assert response.json() == {"success": True, "items_cleared": 3}
    assert response["Clear-Site-Data"] == '"cache", "storage"'
    stored = with_patient_data.stored()
    assert "patient_summary" not in stored and "_auth_user_id" in stored
    event = CleanupEvent.objects.get()
    assert (event.reason, event.source, event.items_cleared) == ("manual_cleanup", "api", 3)
    assert event.actor_id == int(stored["_auth_user_id"])


def test_clear_without_patient_data_reports_zero(logged_in):
    assert logged_in.post(CLEAR).json() == {"success": True, "items_cleared": 0}


@pytest.mark.parametrize("path", [CLEAR, EMERGENCY])
def test_the_claimed_trigger_is_a_hint_beside_the_source_the_server_knows(with_patient_data, path):
    with_patient_data.post(path, headers={"X-Cleanup-Trigger": "shortcut"})
    event = CleanupEvent.objects.get()
    assert (event.source, event.client_hint) == ("api", "shortcut")


@pytest.mark.parametrize("claim", ["command", "startup", "middleware", "x" * 300, "shortcut\x00"])
def test_a_client_cannot_choose_the_audit_source_or_an_unknown_hint(with_patient_data, claim):
    response = with_patient_data.post(CLEAR, headers={"X-Cleanup-Trigger": claim})
    assert response.json() == {"success": True, "items_cleared": 3}
    event = CleanupEvent.objects.get()
    assert (event.source, event.client_hint) == ("api", None)


def test_a_hidden_tab_clear_is_recorded_with_its_reason(with_patient_data):
    response = with_patient_data.post(CLEAR, headers={"X-Cleanup-Reason": "tab_hidden"})
    assert response.json() == {"success": True, "items_cleared": 3}
    assert CleanupEvent.objects.get().reason == "tab_hidden"


def test_a_reason_outside_the_page_list_is_refused_and_clears_nothing(with_patient_data):
    response = with_patient_data.post(CLEAR, headers={"X-Cleanup-Reason": "logout"})
    assert response.status_code == 400 and response.json()["error"] == "bad_reason"
    assert "patient_summary" in with_patient_data.stored()
    assert not CleanupEvent.objects.exists()


def test_emergency_ends_the_session(with_patient_data):
    response = with_patient_data.post(EMERGENCY)
    assert response.status_code == 200
    assert response.json() == {"success": True, "items_cleared": 3}
    assert response["Clear-Site-Data"] == '"cache", "cookies", "storage"'
    assert with_patient_data.get("/_test/whoami/").json() == {"authenticated": False}
    # one row: the logout inside the emergency cleanup is not recorded twice
    event = CleanupEvent.objects.get()
    assert (event.action, event.reason) == ("end_session", "emergency_cleanup")


@pytest.mark.parametrize("path", [CLEAR, EMERGENCY])
def test_other_methods_get_a_json_405(logged_in, path):
    response = logged_in.get(path)
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"
    assert response["Allow"] == "POST"


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("path", [CLEAR, EMERGENCY])
def test_cross_site_posts_are_refused(clinician, kind, path):
    """Original defect 7: the endpoints were csrf_exempt."""
    attacker = browser_with_patient_data(clinician, kind, enforce_csrf_checks=True)
    response = attacker.post(path)
    assert response.status_code == 403
    assert response.json() == {
        "success": False,
        "error": "csrf_failed",
        "message": "CSRF verification failed. Reload the page.",
    }
    assert "patient_summary" in attacker.stored()
    assert attacker.get("/_test/whoami/").json() == {"authenticated": True}


def test_a_same_site_post_with_the_token_works(clinician):
    browser = browser_with_patient_data(clinician, enforce_csrf_checks=True)
    request = RequestFactory().get("/")
    token = get_token(request)
    browser.client.cookies["csrftoken"] = request.META["CSRF_COOKIE"]
    response = browser.post(CLEAR, headers={"X-CSRFToken": token})
    assert response.json() == {"success": True, "items_cleared": 3}


def test_failures_answer_with_a_stable_code_and_no_internals(with_patient_data, monkeypatch):
    async def boom(*args, **kwargs):
        raise ValueError("SYN-XX-000001 Synthia Example")

    monkeypatch.setattr(cleanup, "aclear_patient_session_data", boom)
    response = with_patient_data.post(CLEAR)
    assert response.status_code == 500
    assert response.json() == {
        "success": False,
        "error": "cleanup_failed",
        "message": "The cleanup could not be completed.",
    }
    assert b"SYN-XX" not in response.content


def test_status_is_passive_and_counts_without_values(with_patient_data):
    body = with_patient_data.get("/api/session-status/").json()
    assert body["authenticated"] is True
    assert body["has_patient_data"] is True
    assert body["items"] == 3
    assert body["keys"] == ["current_patient_id", "patient_cda_*", "patient_summary"]
    assert 0 < body["seconds_until_timeout"] <= 30 * 60
    assert "SYN" not in str(body)


def test_status_counts_down_to_the_absolute_lifetime_too(with_patient_data):
    with_patient_data.rewrite(since=time.time() - (12 * 60 - 2) * 60)
    left = with_patient_data.get("/api/session-status/").json()["seconds_until_timeout"]
    assert 0 < left <= 120
