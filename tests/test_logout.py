"""Logout clears the patient data and is audited with its item count."""

from __future__ import annotations

import time

import pytest
from django.contrib.auth import logout
from django.test import RequestFactory

from patient_data.models import CleanupEvent
from patient_data.signals import patient_session_cleared


def _events():
    return [(e.action, e.reason, e.source, e.items_cleared) for e in CleanupEvent.objects.all()]


@pytest.mark.parametrize("path", ["/_test/logout/", "/_test/alogout/"])
def test_contrib_logout_is_recorded_once(with_patient_data, path):
    key = with_patient_data.session_key
    with_patient_data.post(path)
    assert _events() == [("end_session", "logout", "logout", 3)]
    assert with_patient_data.get("/_test/whoami/").json() == {"authenticated": False}
    assert CleanupEvent.objects.get().session_ref not in {key, "-"}


def test_hand_made_logout_still_clears_patient_data(with_patient_data):
    with_patient_data.get("/_test/drop-auth/")
    stored = with_patient_data.stored()
    assert "_auth_user_id" not in stored
    assert "patient_summary" not in stored
    assert _events() == [("end_session", "logout", "middleware", 3)]


def test_hand_made_flush_is_recorded_with_its_count(with_patient_data):
    with_patient_data.get("/_test/flush/")
    assert _events() == [("end_session", "logout", "middleware", 3)]


def test_signal_carries_counts_and_names_only(with_patient_data):
    received = []

    def receiver(sender, **kwargs):
        received.append(kwargs)

    patient_session_cleared.connect(receiver)
    try:
        with_patient_data.post("/api/clear-patient-session/")
    finally:
        patient_session_cleared.disconnect(receiver)
    (kwargs,) = received
    assert kwargs["reason"] == "manual_cleanup"
    assert kwargs["items_cleared"] == 3
    assert kwargs["keys"] == ("current_patient_id", "patient_cda_*", "patient_summary")
    assert len(kwargs["session_ref"]) == 32
    assert "SYN" not in repr(kwargs)


def test_logout_of_a_request_without_session_data_is_harmless(clinician, client):
    request = RequestFactory().get("/")
    request.session = client.session
    request.user = clinician
    logout(request)
    assert _events() == [("end_session", "logout", "logout", 0)]


def test_login_as_someone_else_records_the_lost_patient_data(with_patient_data):
    with_patient_data.get("/_test/login-other/")
    assert "patient_summary" not in with_patient_data.stored()
    assert _events() == [("end_session", "session_flushed", "middleware", 3)]


def test_removing_one_key_in_a_view_is_not_a_logout(with_patient_data):
    with_patient_data.post("/api/clear-patient-session/")
    assert _events() == [("clear_patient_data", "manual_cleanup", "api", 3)]


@pytest.mark.parametrize("path", ["/_test/logout/", "/_test/alogout/"])
def test_a_logout_after_the_idle_end_is_not_recorded_again(with_patient_data, path):
    # The middleware ends the idle session first; the view's own logout then has nothing left.
    with_patient_data.rewrite(seen=time.time() - 61 * 60)
    with_patient_data.post(path)
    assert _events() == [("end_session", "session_max_inactive", "middleware", 3)]
