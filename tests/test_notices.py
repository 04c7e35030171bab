"""After-the-fact notices and the portal's own error pages (the browser tests show them in
Chromium; these pin the server side through both clients)."""

from __future__ import annotations

import re
import time

import pytest
from django.test import Client, RequestFactory, override_settings
from django.views.defaults import server_error

from patient_data import notices
from patient_data.templatetags.patient_session import patient_session_widget

NOTICE = re.compile(r"data-session-notice>([^<]*)</div>")


def _notice(html: str) -> str | None:
    match = NOTICE.search(html)
    return match[1] if match else None


def test_a_logout_leaves_a_notice_shown_once_on_the_next_page(logged_in):
    response = logged_in.post("/accounts/logout/")
    value = response.cookies[notices.COOKIE].value
    assert re.fullmatch(r"logout\.\d+", value)  # a reason code and a time, nothing else

    page = logged_in.get("/accounts/login/")
    assert re.fullmatch(r"Signed out at \d\d:\d\d UTC\.", _notice(page.text))
    assert page.cookies[notices.COOKIE].value == ""  # dropped once shown
    assert _notice(logged_in.get("/accounts/login/").text) is None


def test_an_idle_timeout_found_on_the_next_page_is_said_on_that_page(with_patient_data):
    with_patient_data.rewrite(seen=time.time() - 31 * 60)
    html = with_patient_data.get("/patients/").text
    assert re.fullmatch(
        r"Patient data cleared after 30 minutes of inactivity at \d\d:\d\d UTC\.", _notice(html)
    )


def test_the_end_of_a_session_by_max_inactivity_is_said_on_the_sign_in_page(with_patient_data):
    with_patient_data.rewrite(seen=time.time() - 61 * 60)
    response = with_patient_data.get("/patients/")
    assert response.status_code == 302
    html = with_patient_data.get(response["Location"]).text
    assert _notice(html).startswith("Signed out after 1 hour of inactivity at ")


def test_a_manual_cleanup_leaves_no_notice_the_page_already_said_it(with_patient_data):
    response = with_patient_data.post("/api/clear-patient-session/")
    assert notices.COOKIE not in response.cookies


@pytest.mark.parametrize(
    "value", ["logout", "unknown_reason.1700000000", "logout.1", "<script>.1", "logout.x"]
)
def test_a_forged_or_stale_notice_cookie_shows_nothing(client: Client, db, value):
    client.cookies[notices.COOKIE] = value
    assert _notice(client.get("/accounts/login/").text) is None


def test_notices_name_the_configured_timeouts():
    with override_settings(PATIENT_SESSION_TIMEOUT=0.5, PATIENT_MAX_INACTIVE_TIME=90):
        texts = notices.reason_texts()
    assert texts["patient_session_timeout"] == "Patient data cleared after 30 seconds of inactivity"
    assert texts["session_max_inactive"] == "Signed out after 90 minutes of inactivity"


def test_the_widget_is_told_the_socket_and_the_page_timers():
    with override_settings(PATIENT_HIDDEN_TIMEOUT=45, PATIENT_TIMEOUT_WARNING=20):
        widget = patient_session_widget()
    assert widget["socket_url"] == "/ws/patient-session/"
    assert (widget["hidden_timeout"], widget["timeout_warning"]) == (45, 20)
    assert widget["reasons"]["emergency_cleanup"] == "Signed out: emergency cleanup"


def test_unknown_pages_get_the_portal_404(logged_in):
    response = logged_in.get("/patients/" + "0" * 32 + "/")
    assert response.status_code == 404
    assert "This patient is no longer loaded" in response.text
    assert "/static/css/portal.css" in response.text


def test_a_csrf_failure_outside_the_api_gets_the_portal_403(clinician):
    client = Client(enforce_csrf_checks=True)
    client.force_login(clinician)
    response = client.post("/patients/", {"name": "x"})
    assert response.status_code == 403
    assert "Your page was out of date" in response.text
    assert "CSRF" not in response.text


def test_server_errors_get_the_portal_500(db):
    response = server_error(RequestFactory().get("/patients/"))
    html = response.content.decode()
    assert response.status_code == 500
    assert "Something went wrong on our side" in html and "/static/css/portal.css" in html
