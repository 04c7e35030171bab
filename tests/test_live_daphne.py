"""End to end on two daphne processes sharing the suite's database and a real Redis: a socket
on process A sees what a request on process B does, staff on B end a session held on A, and
refused handshakes are HTTP 403 on the wire. Every frame is scanned (values, session keys).

The servers are presence's (``tests/live_servers.py``); skipped when Redis does not answer.
"""

from __future__ import annotations

import asyncio
import json
import re
from io import StringIO

import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests import test_presence_daphne as presence_e2e
from tests.live_support import scan
from tests.test_daphne_portal import Browser

# Presence's two servers (same secret as the suite, own Redis prefix), shared fixtures.
_servers_secret = presence_e2e._servers_secret
prefix = presence_e2e.prefix
servers = presence_e2e.servers

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis]

PASSWORD = "synthetic-e2e-pass-41"


@pytest.fixture
async def seeded(transactional_db, settings) -> None:
    """The demo users and patients, with password hashes the servers can verify (the suite's
    fast test hasher is not among the project's)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    await sync_to_async(call_command)(
        "seed_demo", patients=3, password=PASSWORD, staff_password=PASSWORD, stdout=StringIO()
    )


def _signed_in(origin: str, username: str = "clinician") -> tuple[Browser, str | None]:
    """A browser signed in on ``origin``; the clinician also opens a patient (its id)."""
    browser = Browser(origin)
    page = browser.open("/accounts/login/")[2]
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    login = {"csrfmiddlewaretoken": token, "username": username, "password": PASSWORD}
    assert browser.open("/accounts/login/", login)[0] == 200
    if username != "clinician":
        return browser, None
    search = {"csrfmiddlewaretoken": browser.cookie("csrftoken"), "patient_id": "SYN-"}
    page = browser.open("/patients/", search)[2]
    link = re.search(r'href="(/patients/[0-9a-f]{32}/)">(SYN-[A-Z]{2}-\d{6})<', page)
    assert browser.open(link.group(1))[0] == 200
    return browser, link.group(2)


class Frames:
    """A real WebSocket client whose every frame is scanned."""

    def __init__(self, websocket, *forbidden: str | None) -> None:
        self.websocket = websocket
        self.forbidden = [value for value in forbidden if value]

    async def expect(self, kind: str) -> dict:
        while True:
            text = await asyncio.wait_for(self.websocket.recv(), timeout=30)
            scan(text)
            assert not any(value in text for value in self.forbidden)
            frame = json.loads(text)
            if frame["type"] == kind:
                return frame

    async def closed_with(self) -> int:
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await self.expect("nothing")
        return closed.value.rcvd.code


def _open(server, browser: Browser, path: str = "/ws/patient-session/", origin: str = ""):
    cookie = "; ".join(f"{c.name}={c.value}" for c in browser.cookies)
    return connect(
        f"ws://127.0.0.1:{server.port}{path}",
        origin=origin or server.origin,
        additional_headers={"Cookie": cookie},
        open_timeout=10,
    )


async def test_a_socket_on_one_process_sees_a_cleanup_made_on_another(servers, seeded):
    a, b = servers
    browser, patient_id = await asyncio.to_thread(_signed_in, b.origin)
    async with _open(a, browser) as websocket:
        frames = Frames(websocket, patient_id, browser.cookie("sessionid"))
        state = await frames.expect("session.state")
        assert state["has_patient_data"] is True and state["items"] >= 1
        # Longer than redis-py 8's default socket timeout: the layer must still deliver.
        await asyncio.sleep(11)
        token = browser.cookie("csrftoken")
        status, _, body = await asyncio.to_thread(
            browser.post_api, "/api/clear-patient-session/", token
        )
        assert status == 200
        cleared = await frames.expect("session.cleared")
        assert (cleared["source"], cleared["items_cleared"]) == ("api", body["items_cleared"])
        await asyncio.to_thread(browser.post_api, "/api/emergency-session-cleanup/", token)
        assert (await frames.expect("session.ended"))["reason"] == "emergency_cleanup"
        assert await frames.closed_with() == 4001


async def test_refused_handshakes_are_403_on_the_wire(servers, seeded):
    a, b = servers
    browser, _ = await asyncio.to_thread(_signed_in, b.origin)
    attempts = [
        _open(a, Browser(a.origin)),
        _open(a, browser, origin="https://evil.example"),
        _open(a, browser, path="/ws/monitor/"),
    ]
    for attempt in attempts:
        with pytest.raises(InvalidStatus) as refused:
            async with attempt:
                pass
        assert refused.value.response.status_code == 403


async def test_staff_on_one_process_end_a_session_held_on_another(servers, seeded):
    a, b = servers
    clinician, patient_id = await asyncio.to_thread(_signed_in, a.origin)
    staff, _ = await asyncio.to_thread(_signed_in, b.origin, "staff")
    async with (
        _open(a, clinician) as page,
        _open(b, staff, "/ws/monitor/") as monitor,
        _open(a, staff, "/ws/monitor/") as watcher,  # another dashboard, on the page's process
    ):
        keys = (clinician.cookie("sessionid"), staff.cookie("sessionid"))
        page_frames, monitor_frames = Frames(page, patient_id, *keys), Frames(monitor, *keys)
        watcher_frames = Frames(watcher, patient_id, *keys)
        ref = (await page_frames.expect("session.state"))["session"]
        snapshot = await monitor_frames.expect("sessions.snapshot")
        [row] = [row for row in snapshot["sessions"] if row["session"] == ref]
        assert (row["user"], row["open_tabs"]) == ("clinician", 1)
        await watcher_frames.expect("sessions.snapshot")
        await monitor.send(json.dumps({"type": "end_session", "session": ref, "id": 1}))
        assert (await monitor_frames.expect("reply"))["ok"] is True
        assert (await page_frames.expect("session.ended"))["source"] == "staff"
        assert await page_frames.closed_with() == 4001
        # Made on B, through A's fan-out listener to the dashboard on A.
        ended = await watcher_frames.expect("session.ended")
        assert (ended["session"], ended["source"]) == (ref, "staff")
