"""The cleanup buttons, shortcuts and the seed's JavaScript API, one at a time, in Chromium:
the data is gone in the database and from the page, and the event fired with its detail."""

from __future__ import annotations

import re

import pytest

from tests.browser.conftest import (
    axe_violations,
    log_in,
    log_in_with_patient,
    screenshot,
    session_key,
    without_socket,
)

pytestmark = pytest.mark.browser


@pytest.fixture(params=["socket", "http"])
def transport(request, page) -> str:
    """Each command once over the session socket, once over the HTTP fallback."""
    if request.param == "http":
        without_socket(page)
    return request.param


def _source(transport: str) -> str:
    """The audit's source is what the server knows; what the page claimed (button, shortcut)
    is kept apart as ``client_hint`` on the HTTP path."""
    return "socket" if transport == "socket" else "api"


RECORD_EVENTS = """
window.cleanupEvents = [];
document.addEventListener("patientSessionCleared", (e) => window.cleanupEvents.push(e.detail));
"""


def _events(page) -> list[dict]:
    return page.evaluate("window.cleanupEvents")


def _ready(page) -> None:
    """The widget has the first status (its script ran) and events are recorded."""
    page.wait_for_function(
        "document.querySelector('[data-monitor=items]').textContent !== 'checking'"
    )
    page.evaluate(RECORD_EVENTS)


def _blanked(page) -> None:
    page.wait_for_selector('[data-patient-data="cleared"]')
    assert page.locator("[data-patient-data] code").count() == 0


def _assert_cleared(page, server, key: str, *, source: str, hint: str | None = None) -> None:
    _blanked(page)
    message = page.locator("[data-session-messages] [role=status]")
    assert re.fullmatch(r"Patient data cleared on request \(\d+ items\)\.", message.inner_text())
    assert server.patient_keys(key) == []
    assert server.session(key)["_auth_user_id"]
    row = server.audit(key)[-1]
    assert (row["reason"], row["source"]) == ("manual_cleanup", source)
    if hint and source == "api":
        assert row["client_hint"] == hint
    assert _events(page) == [
        {"reason": "manual_cleanup", "source": source, "items_cleared": row["items_cleared"]}
    ]


def test_clear_button_clears_the_session_and_the_page(page, server, transport):
    log_in_with_patient(page)
    _ready(page)
    key = session_key(page)
    page.get_by_role("button", name="Clear patient data").click()
    _assert_cleared(page, server, key, source=_source(transport))
    screenshot(page, f"widget-cleared-desktop-{transport}")


def test_ctrl_shift_c_clears_as_a_shortcut(page, server, transport):
    log_in_with_patient(page)
    _ready(page)
    key = session_key(page)
    page.keyboard.press("Control+Shift+C")
    _assert_cleared(page, server, key, source=_source(transport), hint="shortcut")


def _assert_ended_by_emergency(page, server, key: str) -> None:
    page.wait_for_url("**/accounts/login/")
    assert server.session(key) is None
    assert server.audit(key)[-1]["reason"] == "emergency_cleanup"
    notice = page.locator("[data-session-notice]")
    assert re.fullmatch(r"Signed out: emergency cleanup at \d\d:\d\d UTC\.", notice.inner_text())


def test_emergency_button_asks_then_ends_the_session(page, server, transport):
    log_in_with_patient(page)
    _ready(page)
    key = session_key(page)
    asked = []

    def accept(dialog):
        asked.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    page.get_by_role("button", name="Emergency cleanup").click()
    _assert_ended_by_emergency(page, server, key)
    assert asked == ["Emergency cleanup: end the whole session now and clear all patient data?"]
    screenshot(page, "login-after-emergency")


def test_emergency_button_declined_changes_nothing(page, server):
    log_in_with_patient(page)
    _ready(page)
    key = session_key(page)
    page.on("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name="Emergency cleanup").click()
    page.get_by_role("button", name="Clear patient data").wait_for()
    assert server.patient_keys(key)
    assert _events(page) == []


def test_ctrl_shift_e_asks_then_ends_the_session(page, server, transport):
    log_in_with_patient(page)
    _ready(page)
    key = session_key(page)
    page.on("dialog", lambda dialog: dialog.accept())
    page.keyboard.press("Control+Shift+E")
    _assert_ended_by_emergency(page, server, key)


def test_api_clear_patient_session(page, server, transport):
    log_in_with_patient(page)
    _ready(page)
    key = session_key(page)
    result = page.evaluate("window.clearPatientSession()")
    assert result == {"success": True, "items_cleared": server.audit(key)[-1]["items_cleared"]}
    _assert_cleared(page, server, key, source=_source(transport))


def test_api_manual_cleanup_resolves_with_the_server_result(page, server, transport):
    log_in_with_patient(page)
    _ready(page)
    key = session_key(page)
    result = page.evaluate("window.patientSessionCleanup.manualCleanup()")
    assert result["success"] is True and result["items_cleared"] >= 6
    _assert_cleared(page, server, key, source=_source(transport))


def test_api_emergency_session_cleanup(page, server, transport):
    log_in_with_patient(page)
    _ready(page)
    key = session_key(page)
    page.evaluate("window.emergencySessionCleanup()")
    _assert_ended_by_emergency(page, server, key)


def test_api_disable_turns_the_shortcuts_off_and_enable_back_on(page, server, transport):
    log_in_with_patient(page)
    _ready(page)
    key = session_key(page)
    page.evaluate("window.patientSessionCleanup.disable()")
    page.keyboard.press("Control+Shift+C")
    # The explicit API still answers while shortcuts are off: its reply proves the shortcut's
    # request, had there been one, would have landed first.
    page.evaluate("window.patientSessionCleanup.refreshStatus()")
    assert server.patient_keys(key) and _events(page) == []
    page.evaluate("window.patientSessionCleanup.enable()")
    page.keyboard.press("Control+Shift+C")
    _assert_cleared(page, server, key, source=_source(transport), hint="shortcut")


def _log_out_elsewhere(page) -> None:
    """The session ends on the server, by a request this page knows nothing about."""
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    response = page.request.post("/accounts/logout/", headers={"X-CSRFToken": token})
    assert response.ok and "Sign in" in response.text()


def test_api_manual_cleanup_rejects_with_a_clear_error_when_the_session_has_ended(
    page, server, transport
):
    log_in_with_patient(page)
    _ready(page)
    key = session_key(page)
    _log_out_elsewhere(page)
    if transport == "socket":  # the server says so at once
        page.locator("[data-session-ended]").wait_for()
    message = page.evaluate(
        "window.patientSessionCleanup.manualCleanup().then(() => 'resolved', (e) => e.message)"
    )
    assert message == "The session has ended; sign in again to continue."
    logout = server.audit(key)[-1] if transport == "socket" else None
    assert _events(page) == [
        {"reason": "logout", "source": "logout", "items_cleared": logout["items_cleared"]}
        if logout
        else {"reason": None, "source": "status", "items_cleared": None}
    ]


def test_a_page_whose_session_ended_says_so_and_offers_sign_in(page, server, transport):
    """The defect: the page kept looking signed in and "Clear" reported a false success."""
    log_in_with_patient(page)
    _ready(page)
    _log_out_elsewhere(page)
    if transport == "http":  # no push: the next click finds out, and claims nothing
        page.get_by_role("button", name="Clear patient data").click()
    banner = page.locator("[data-session-ended]")
    banner.wait_for()
    assert banner.evaluate("el => document.activeElement === el")
    assert "Your session has ended." in banner.inner_text()
    if transport == "socket":
        assert "Signed out." in banner.inner_text()
    for hidden in ("Clear patient data", "Emergency cleanup", "Log out"):
        assert not page.get_by_role("button", name=hidden).is_visible()
    assert not page.get_by_text("Signed in as").is_visible()
    assert not page.get_by_text("cleared on request").is_visible()
    _blanked(page)
    screenshot(page, f"widget-session-ended-{transport}")
    assert axe_violations(page) == []
    with page.expect_navigation():
        banner.get_by_role("link", name="Sign in again").click()
    assert page.url.endswith("/accounts/login/")
    log_in(page)
    assert page.get_by_text("Signed in as clinician").is_visible()
