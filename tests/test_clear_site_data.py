"""Clear-Site-Data on every response that ends patient data or a login, not only the API's."""

from __future__ import annotations

import time

import pytest
from django.test import override_settings

MINUTE = 60


@pytest.mark.parametrize("path", ["/accounts/logout/", "/_test/logout/", "/_test/drop-auth/"])
def test_a_logout_response_asks_the_browser_to_drop_its_copies(with_patient_data, path):
    response = with_patient_data.post(path)
    assert response["Clear-Site-Data"] == '"cache", "storage"'


def test_a_session_flushed_by_a_view_also_clears(with_patient_data):
    # Other code ended the session (no logout signal): the cleanup middleware records it, and
    # the browser is still told to drop its copies.
    response = with_patient_data.get("/_test/flush/")
    assert response["Clear-Site-Data"] == '"cache", "storage"'
    assert with_patient_data.stored() == {}


def test_a_logout_without_patient_data_also_clears(logged_in):
    assert logged_in.post("/accounts/logout/")["Clear-Site-Data"] == '"cache", "storage"'


@pytest.mark.parametrize("idle_minutes", [31, 61])
def test_a_timeout_response_asks_the_browser_to_drop_its_copies(with_patient_data, idle_minutes):
    with_patient_data.rewrite(seen=time.time() - idle_minutes * MINUTE)
    response = with_patient_data.get("/_test/plain/")
    assert response["X-Patient-Session-Cleared"]
    assert response["Clear-Site-Data"] == '"cache", "storage"'


def test_the_emergency_response_keeps_its_own_value(with_patient_data):
    response = with_patient_data.post("/api/emergency-session-cleanup/")
    assert response["Clear-Site-Data"] == '"cache", "cookies", "storage"'


def test_ordinary_responses_and_a_login_as_someone_else_do_not_clear(with_patient_data):
    assert "Clear-Site-Data" not in with_patient_data.get("/_test/plain/")
    assert "Clear-Site-Data" not in with_patient_data.get("/_test/login-other/")


@override_settings(PATIENT_CLEAR_SITE_DATA=False)
def test_the_setting_turns_it_off(with_patient_data):
    with_patient_data.rewrite(seen=time.time() - 31 * MINUTE)
    assert "Clear-Site-Data" not in with_patient_data.get("/_test/plain/")
    assert "Clear-Site-Data" not in with_patient_data.post("/accounts/logout/")
