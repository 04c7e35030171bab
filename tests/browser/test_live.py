"""The open page over the session socket, on a daphne with timings of seconds: other tabs,
closing the last tab, the timeout warning, the hidden-tab timer, a server restart."""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.browser.conftest import (
    axe_violations,
    log_in,
    log_in_with_patient,
    open_patient,
    screenshot,
    search,
    session_key,
)

pytestmark = pytest.mark.browser

SHORT = {
    "PATIENT_SESSION_TIMEOUT": 20 / 60,  # minutes, as the settings expect
    "PATIENT_MAX_INACTIVE_TIME": 5,
    "PATIENT_TIMEOUT_WARNING": 12,
    "PATIENT_ACTIVITY_WRITE_INTERVAL": 1,
    "PATIENT_DISCONNECT_GRACE": 3,
    "PATIENT_PRESENCE_HEARTBEAT": 1,
    "PATIENT_HIDDEN_TIMEOUT": 3,
}
LONG_WAIT = 45_000


@pytest.fixture(scope="module")
def quick(start_server, chromium):
    return start_server(**SHORT)


@pytest.fixture
def tab(new_context, quick):
    return new_context(quick).new_page()


def _live(page) -> None:
    page.wait_for_function(
        "document.querySelector('[data-monitor=connection]').textContent === 'live'"
    )


def _record_events(page) -> None:
    page.evaluate(
        """window.cleanupEvents = [];
        document.addEventListener("patientSessionCleared", (e) => cleanupEvents.push(e.detail));
        window.notReloaded = true;"""
    )


def _blanked(page, timeout: float = 10_000) -> None:
    page.wait_for_selector('[data-patient-data="cleared"]', timeout=timeout)
    assert page.locator("[data-patient-data] code").count() == 0


def test_a_cleanup_in_one_tab_blanks_the_other_at_once(tab, quick):
    log_in_with_patient(tab)
    other = tab.context.new_page()
    other.goto(tab.url)
    for page in (tab, other):
        _live(page)
        _record_events(page)
    tab.get_by_role("button", name="Clear patient data").click()
    _blanked(other)
    detail = other.evaluate("cleanupEvents")
    assert len(detail) == 1 and detail[0]["reason"] == "manual_cleanup"
    assert tab.evaluate("cleanupEvents") == detail
    assert other.evaluate("window.notReloaded") is True
    assert (
        "Patient data cleared on request" in other.locator("[data-session-messages]").inner_text()
    )


def test_an_http_cleanup_from_another_browser_reaches_the_page_in_one_frame(
    tab, quick, new_context
):
    """An HTTP cleanup's click rides in its ``session.cleared`` (``activity: true``): the open
    page blanks on that one frame, and no ``session.activity`` of the click follows it."""
    received = []
    tab.on(
        "websocket",
        lambda socket: socket.on(
            "framereceived", lambda payload: received.append(json.loads(payload))
        ),
    )
    log_in_with_patient(tab)
    _live(tab)
    _record_events(tab)
    elsewhere = new_context(quick).new_page()  # another profile, the same session cookie
    elsewhere.context.add_cookies(tab.context.cookies())
    elsewhere.goto(tab.url)
    elsewhere.wait_for_timeout(1500)  # its page view's activity write is past the interval
    status = elsewhere.evaluate(
        """async () => {
      const cookie = document.cookie.match(/(?:^|;\\s*)csrftoken=([^;]+)/);
      const token = cookie ? cookie[1] : document.querySelector('meta[name="csrf-token"]').content;
      const response = await fetch("/api/clear-patient-session/", {
        method: "POST", headers: {"X-CSRFToken": token, Accept: "application/json"},
      });
      return response.status;
    }"""
    )
    assert status == 200
    _blanked(tab)
    tab.wait_for_timeout(1500)
    types = [frame.get("type") for frame in received]
    cleared = [frame for frame in received if frame.get("type") == "session.cleared"]
    assert len(cleared) == 1 and cleared[0]["activity"] is True
    assert "session.activity" not in types[types.index("session.cleared") :]
    detail = tab.evaluate("cleanupEvents")
    assert len(detail) == 1 and detail[0]["reason"] == "manual_cleanup"
    assert detail[0]["source"] == "api"
    assert tab.evaluate("window.notReloaded") is True
    screenshot(tab, "live-cleared-by-http-elsewhere")


def test_a_logout_in_one_tab_ends_the_other(tab, quick):
    log_in_with_patient(tab)
    other = tab.context.new_page()
    other.goto(tab.url)
    _live(other)
    with tab.expect_navigation():
        tab.get_by_role("button", name="Log out").click()
    banner = other.locator("[data-session-ended]")
    banner.wait_for()
    assert "Signed out." in banner.inner_text()
    _blanked(other)
    assert not other.get_by_role("button", name="Log out").is_visible()


def test_clicking_through_five_patients_and_reloading_clears_nothing(tab, quick):
    log_in(tab)
    key = session_key(tab)
    for index in range(5):
        search(tab)
        open_patient(tab, index)
        _live(tab)
    tab.reload()
    _live(tab)
    time.sleep(SHORT["PATIENT_DISCONNECT_GRACE"] + 1)  # longer than the grace: nothing came
    assert quick.patient_keys(key)
    assert [row["reason"] for row in quick.audit(key)] == []


def test_closing_the_only_tab_clears_the_data_after_the_grace(tab, quick):
    log_in_with_patient(tab)
    key = session_key(tab)
    _live(tab)
    tab.close()
    deadline = time.monotonic() + 30
    while quick.patient_keys(key) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert quick.patient_keys(key) == []
    assert quick.audit(key)[-1]["reason"] == "browser_closed"
    assert quick.session(key)["_auth_user_id"]  # the data left, the sign-in stays


def test_the_warning_shows_and_stay_signed_in_keeps_the_data(tab, quick):
    log_in_with_patient(tab)
    key = session_key(tab)
    _live(tab)
    dialog = tab.locator("[data-timeout-warning-dialog]")
    dialog.wait_for(state="visible", timeout=LONG_WAIT)
    stay = tab.get_by_role("button", name="Stay signed in")
    assert stay.evaluate("el => document.activeElement === el")
    assert "will be cleared" in dialog.inner_text()
    assert tab.locator("[data-warning-announcer]").inner_text().endswith("left.")
    screenshot(tab, "widget-timeout-warning")
    assert axe_violations(tab) == []
    warned_at = time.monotonic()
    stay.click()
    dialog.wait_for(state="hidden")
    # Past the deadline the warning announced, the data is still held.
    time.sleep(max(0.0, SHORT["PATIENT_TIMEOUT_WARNING"] + 2 - (time.monotonic() - warned_at)))
    assert quick.patient_keys(key)
    assert tab.locator('[data-patient-data="cleared"]').count() == 0


def test_without_an_answer_the_content_blanks_with_no_reload(tab, quick):
    log_in_with_patient(tab)
    key = session_key(tab)
    _live(tab)
    _record_events(tab)
    dialog = tab.locator("[data-timeout-warning-dialog]")
    dialog.wait_for(state="visible", timeout=LONG_WAIT)
    tab.keyboard.press("Escape")  # dismisses; it does not count as staying
    dialog.wait_for(state="hidden")
    _blanked(tab, timeout=LONG_WAIT)
    assert tab.evaluate("window.notReloaded") is True
    assert tab.evaluate("cleanupEvents")[0]["reason"] == "patient_session_timeout"
    assert quick.patient_keys(key) == []
    screenshot(tab, "widget-timed-out")


def test_a_dismissed_warning_is_not_opened_again_by_the_server_s_late_copy(tab, quick):
    """The page warns by its own timer and the server by its socket, for the same deadline;
    the server's frame, arriving after the user dismissed the page's, must not reopen it."""
    held = []

    def between(page_side) -> None:
        server_side = page_side.connect_to_server()

        def to_page(message) -> None:
            if json.loads(message).get("type") == "session.timeout_warning":
                held.append((page_side, message))  # let through once dismissed
            else:
                page_side.send(message)

        server_side.on_message(to_page)

    tab.route_web_socket(re.compile(r"/ws/patient-session/$"), between)
    log_in_with_patient(tab)
    _live(tab)
    dialog = tab.locator("[data-timeout-warning-dialog]")
    dialog.wait_for(state="visible", timeout=LONG_WAIT)  # the page's own timer
    tab.keyboard.press("Escape")
    dialog.wait_for(state="hidden")
    tab.wait_for_timeout(1500)
    assert held, "the server warned too"
    for page_side, message in held:
        page_side.send(message)
    tab.wait_for_timeout(1000)
    assert dialog.is_hidden()


def _hide(page) -> None:
    """Headless Chromium keeps every page visible: the page is told it was hidden."""
    page.evaluate(
        """() => {
      Object.defineProperty(document, "hidden", {value: true, configurable: true});
      Object.defineProperty(document, "visibilityState", {value: "hidden", configurable: true});
      document.dispatchEvent(new Event("visibilitychange"));
    }"""
    )


def test_a_tab_hidden_too_long_clears_the_data_as_tab_hidden(tab, quick):
    log_in_with_patient(tab)
    key = session_key(tab)
    _live(tab)
    _record_events(tab)
    _hide(tab)
    _blanked(tab, timeout=LONG_WAIT)
    assert quick.audit(key)[-1]["reason"] == "tab_hidden"
    assert tab.evaluate("cleanupEvents")[0]["reason"] == "tab_hidden"


def test_a_hidden_tab_clears_nothing_while_another_tab_is_visible(tab, quick):
    log_in_with_patient(tab)
    key = session_key(tab)
    other = tab.context.new_page()
    other.goto("/patients/")
    _live(tab)
    _hide(tab)
    time.sleep(SHORT["PATIENT_HIDDEN_TIMEOUT"] + 2)
    assert quick.patient_keys(key)
    assert [row["reason"] for row in quick.audit(key)] == []


def test_user_input_is_reported_as_activity_and_polling_is_not(tab, quick):
    log_in_with_patient(tab)
    key = session_key(tab)
    _live(tab)
    seen = quick.session(key)["_patient_meta"]["seen"]
    time.sleep(2)  # the status poll and the socket stay passive meanwhile
    assert quick.session(key)["_patient_meta"]["seen"] == seen
    tab.mouse.wheel(0, 200)
    tab.wait_for_function(
        "document.querySelector('[data-monitor=last]').textContent.startsWith('last activity')"
    )
    deadline = time.monotonic() + 10
    while quick.session(key)["_patient_meta"]["seen"] == seen and time.monotonic() < deadline:
        time.sleep(0.3)
    assert quick.session(key)["_patient_meta"]["seen"] > seen


def test_a_server_restart_shows_offline_falls_back_to_http_and_reconnects(
    new_context, chromium, start_server, console
):
    console.allow("WebSocket connection to")
    console.allow("ERR_CONNECTION_REFUSED")
    # A status poll in flight on a kept-alive connection when the server stops is reset.
    console.allow("ERR_CONNECTION_RESET")
    server = start_server(**SHORT)
    page = new_context(server).new_page()
    log_in_with_patient(page)
    key = session_key(page)
    _live(page)
    # New sockets are held back while the server is away, so the fallback is what acts.
    held = {"back": True}

    def hold_back(socket) -> None:
        if held["back"]:
            socket.close(code=1011)
        else:
            socket.connect_to_server()

    page.route_web_socket(re.compile(r"/ws/"), hold_back)
    server.stop()
    page.wait_for_function(
        "document.querySelector('[data-monitor=connection]').textContent === 'offline'"
    )
    server.start()
    page.get_by_role("button", name="Clear patient data").click()
    _blanked(page)
    assert server.audit(key)[-1]["source"] == "api"
    held["back"] = False
    page.wait_for_function(
        "document.querySelector('[data-monitor=connection]').textContent === 'live'",
        timeout=LONG_WAIT,
    )
    screenshot(page, "widget-reconnected")
