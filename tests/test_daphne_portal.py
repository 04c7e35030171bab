"""End to end on daphne: what a clinician does in a browser, over real HTTP.

The production settings (DEBUG off) on a throw-away SQLite database in a temporary NCP_VAR_DIR:
log in, open a patient, check the page's protection, clear the patient data with the CSRF
token like the page's script does, and see a cross-site attempt refused.
"""

from __future__ import annotations

import json

import pytest

from tests.daphne_support import Browser, daphne, production_env


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with daphne(production_env(tmp_path_factory.mktemp("daphne-var"))) as base:
        yield base


def test_a_clinician_session_on_daphne(server):
    browser = Browser(server)
    assert "patient_session_cleanup.js" in browser.log_in()
    _, patient_id, headers, page = browser.open_a_patient()
    assert patient_id in page
    assert headers["X-Patient-Data-Page"] == "true"
    assert headers["Cache-Control"] == "no-cache, no-store, must-revalidate"
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]

    status = json.loads(browser.open("/api/session-status/")[2])
    assert status["has_patient_data"] is True and status["items"] >= 6

    forged = browser.post_api("/api/clear-patient-session/", token=None)
    assert forged[0] == 403 and forged[2]["error"] == "csrf_failed"

    status_code, headers, body = browser.post_api(
        "/api/clear-patient-session/", token=browser.cookie("csrftoken")
    )
    assert status_code == 200
    assert body == {"success": True, "items_cleared": status["items"]}
    assert headers["Clear-Site-Data"] == '"cache", "storage"'
    after = json.loads(browser.open("/api/session-status/")[2])
    assert after["has_patient_data"] is False and after["authenticated"] is True
