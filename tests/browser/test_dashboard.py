"""The staff dashboard in Chromium: a clinician's session appears live, and its "Clear data"
button blanks the clinician's open page (and the data is gone from the database)."""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.browser.conftest import (
    DEFAULT_TIMINGS,
    axe_violations,
    log_in,
    log_in_with_patient,
    screenshot,
    session_key,
)
from tests.bulk_support import REDIS_URL, redis_or_skip

pytestmark = pytest.mark.browser


def _open_dashboard(page) -> None:
    log_in(page, "staff")
    page.goto("/monitor/")
    page.wait_for_function(
        "document.querySelector('[data-monitor-connection]').dataset.state === 'live'"
    )


def test_a_clinician_appears_live_and_staff_clear_their_open_page(new_context, server):
    _appears_live_and_is_cleared_by_staff(new_context, server, "dashboard")


@pytest.fixture(scope="module")
def redis_server(start_server, chromium):
    """The same server on channels-redis, presence and cache in Redis, as deployed."""
    redis_or_skip()
    server = start_server(redis_url=REDIS_URL, **DEFAULT_TIMINGS)
    yield server
    server.stop()
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    for key in list(client.scan_iter(match=f"{server.redis_prefix}*")):
        client.delete(key)  # the layer's, presence's and the cache's keys of this server
    client.close()


def test_the_dashboard_and_the_page_are_live_over_channels_redis(new_context, redis_server):
    """The sockets' frames come through Redis (the project's layer and its pump), not the
    in-memory layer the other browser tests use."""
    _appears_live_and_is_cleared_by_staff(new_context, redis_server, "dashboard-redis")


def _appears_live_and_is_cleared_by_staff(new_context, server, shots: str) -> None:
    staff = new_context(server, viewport={"width": 1280, "height": 800}).new_page()
    _open_dashboard(staff)
    assert staff.locator("tr[data-session]").count() == 0
    assert "No session holds patient data now." in staff.inner_text("[data-monitor-empty]")

    clinician = new_context(server).new_page()
    log_in_with_patient(clinician)
    key = session_key(clinician)
    row = staff.locator("tr[data-session]", has_text="clinician")
    row.wait_for()  # no reload: the session was announced when it stored patient data
    assert int(row.locator('[data-field="items"]').inner_text()) == len(server.patient_keys(key))
    clinician.wait_for_function(
        "document.querySelector('[data-monitor=connection]').textContent === 'live'"
    )
    staff.wait_for_function(
        "document.querySelector('tr[data-session] [data-field=open_tabs]').textContent === '1'"
    )
    screenshot(staff, f"{shots}-live")
    assert axe_violations(staff) == []

    staff.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Clear data").click()
    clinician.wait_for_selector('[data-patient-data="cleared"]')
    assert server.patient_keys(key) == []
    assert server.audit(key)[-1]["source"] == "staff"
    staff.locator("tr[data-session]").first.wait_for(state="detached")
    assert "patient data cleared (staff_cleanup, staff" in staff.inner_text("[data-monitor-feed]")
    screenshot(staff, f"{shots}-after-clear")
    screenshot(clinician, f"{shots}-clinician-cleared")


def test_the_dashboard_at_phone_width(new_context, server):
    staff = new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = staff.new_page()
    _open_dashboard(page)
    clinician = new_context().new_page()
    log_in_with_patient(clinician)
    page.locator("tr[data-session]").first.wait_for()
    overflow = page.evaluate("document.documentElement.scrollWidth > window.innerWidth")
    assert overflow is False
    screenshot(page, "dashboard-phone", full_page=False)


def test_a_clinician_cannot_open_the_dashboard(page, console):
    console.allow("403")
    log_in(page)
    response = page.goto("/monitor/")
    assert response.status == 403
    assert not page.get_by_role("link", name="Session monitor").is_visible()


def test_typing_into_an_empty_search_is_never_wiped_by_a_status(page):
    log_in(page)
    page.wait_for_function(
        "document.querySelector('[data-monitor=connection]').textContent === 'live'"
    )
    page.get_by_label("Name").fill("typed by hand")
    page.evaluate("window.patientSessionCleanup.refreshStatus()")
    page.wait_for_timeout(1000)
    assert page.get_by_label("Name").input_value() == "typed by hand"


@pytest.fixture(scope="module")
def every_click(start_server, chromium):
    """A server that records (and announces) every click's activity one second apart."""
    return start_server(PATIENT_ACTIVITY_WRITE_INTERVAL=1)


def test_clicks_of_sessions_without_patient_data_cost_the_dashboard_no_snapshot(
    new_context, every_click
):
    """Every signed-in clinician's recorded activity reaches the dashboard; for a session it
    does not list and that holds no data it must not ask the server for a whole snapshot."""
    staff = new_context(every_click).new_page()
    sent, received = [], []

    def watch(socket) -> None:
        if not socket.url.endswith("/ws/monitor/"):
            return  # the page's own widget socket
        socket.on("framesent", lambda payload: sent.append(json.loads(payload)))
        socket.on("framereceived", lambda payload: received.append(json.loads(payload)))

    staff.on("websocket", watch)
    _open_dashboard(staff)
    clinician = new_context(every_click).new_page()
    log_in(clinician)
    for _ in range(3):
        time.sleep(1.1)  # past the write interval: each page is recorded activity
        clinician.goto("/patients/")
    staff.wait_for_timeout(1000)
    activity = [frame for frame in received if frame["type"] == "session.activity"]
    assert activity and all(frame["items"] == 0 for frame in activity)
    assert [frame for frame in sent if frame.get("type") == "status"] == []
    assert "No session holds patient data now." in staff.inner_text("[data-monitor-empty]")
    screenshot(staff, "dashboard-after-clicks-without-data")


def test_a_row_whose_cleanup_event_was_lost_goes_with_the_next_activity(new_context, every_click):
    """The dashboard missed a session's ``session.cleared`` (dropped here between server and
    page; the HTTP cleanup's click rode in it); the clinician's next recorded activity,
    holding 0 items, still takes the row away."""
    staff = new_context(every_click).new_page()
    dropped = []

    def between(page_side) -> None:
        server_side = page_side.connect_to_server()

        def to_page(message) -> None:
            if json.loads(message).get("type") == "session.cleared":
                dropped.append(message)
            else:
                page_side.send(message)

        server_side.on_message(to_page)

    staff.route_web_socket(re.compile(r"/ws/monitor/$"), between)
    _open_dashboard(staff)
    clinician = new_context(every_click).new_page()
    log_in_with_patient(clinician)
    row = staff.locator("tr[data-session]", has_text="clinician")
    row.wait_for()
    time.sleep(1.1)  # the click is recorded activity again
    status = clinician.evaluate(
        """async () => (await fetch("/api/clear-patient-session/", {
            method: "POST", credentials: "same-origin",
            headers: {"X-CSRFToken": document.cookie.match(/csrftoken=([^;]+)/)[1]},
        })).status"""
    )
    assert status == 200
    staff.wait_for_timeout(1000)
    assert dropped and row.is_visible()  # the cleared event (and its click) did not arrive
    time.sleep(1.1)  # past the write interval: the next page is recorded activity
    clinician.goto("/patients/")
    row.wait_for(state="detached")  # the row went without its cleared event
    assert "No session holds patient data now." in staff.inner_text("[data-monitor-empty]")
