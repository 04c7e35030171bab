"""End to end on two daphne processes sharing PostgreSQL and Redis: a socket on process A
sees what a request on process B does, and refused handshakes are HTTP 403 on the wire.

Needs DATABASE_URL (PostgreSQL) and REDIS_URL; skipped when they are unset or do not answer.
It uses its own database (``<name>_e2e``, created and dropped here) and its own Redis prefix.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.live_support import scan
from tests.test_daphne_portal import Browser

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "synthetic-" + secrets.token_hex(8)
DATABASE_URL = os.environ.get("DATABASE_URL", "")
REDIS_URL = os.environ.get("REDIS_URL", "")


def _answers(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or default_port), timeout=1):
            return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(
    not (DATABASE_URL.startswith("postgres") and REDIS_URL)
    or not (_answers(DATABASE_URL, 5432) and _answers(REDIS_URL, 6379)),
    reason="needs DATABASE_URL (PostgreSQL) and REDIS_URL answering",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _admin(statement: str) -> None:
    parts = urlsplit(DATABASE_URL)
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(statement)


def _start(env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
    process = subprocess.Popen(
        [*command, "ncp_asgi.asgi:application"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, f"127.0.0.1:{port}"
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail("daphne did not start")
            time.sleep(0.2)


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[str, str]]:
    name = urlsplit(DATABASE_URL).path.lstrip("/") + "_e2e"
    _admin(f'DROP DATABASE IF EXISTS "{name}"')
    _admin(f'CREATE DATABASE "{name}"')
    env = {k: v for k, v in os.environ.items() if k != "SESSION_ENGINE"}
    env.update(
        DJANGO_SETTINGS_MODULE="ncp_asgi.settings",
        DATABASE_URL=urlunsplit(urlsplit(DATABASE_URL)._replace(path=f"/{name}")),
        REDIS_URL=REDIS_URL,
        NCP_REDIS_PREFIX=f"{os.environ.get('NCP_REDIS_PREFIX', 'ncp')}-e2e-{secrets.token_hex(4)}",
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(50),
        SECURE_COOKIES="0",
        NCP_WORKERS="2",
        PATIENT_LOG_LEVEL="WARNING",
    )
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=180)
    seed = ["seed_demo", "--patients", "3", "--password", PASSWORD, "--staff-password", PASSWORD]
    subprocess.run([*manage, *seed], cwd=ROOT, env=env, check=True, timeout=120)
    processes = [_start(env), _start(env)]
    try:
        yield processes[0][1], processes[1][1]
    finally:
        for process, _ in processes:
            process.terminate()
            process.wait(timeout=20)
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _signed_in_with_patient(host: str, username: str = "clinician") -> tuple[Browser, str]:
    browser = Browser(f"http://{host}")
    page = browser.open("/accounts/login/")[2]
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    login = {"csrfmiddlewaretoken": token, "username": username, "password": PASSWORD}
    assert browser.open("/accounts/login/", login)[0] == 200
    if username != "clinician":
        return browser, ""
    search = {"csrfmiddlewaretoken": browser.cookie("csrftoken"), "patient_id": "SYN-"}
    page = browser.open("/patients/", search)[2]
    path, patient_id = re.search(
        r'href="(/patients/[0-9a-f]{32}/)">(SYN-[A-Z]{2}-\d{6})<', page
    ).groups()
    assert browser.open(path)[0] == 200
    return browser, patient_id


class Frames:
    """A real WebSocket client whose frames are all scanned (values, raw session key)."""

    def __init__(self, websocket, forbidden: tuple[str, ...]) -> None:
        self.websocket = websocket
        self.forbidden = forbidden

    async def expect(self, kind: str) -> dict:
        while True:
            text = await asyncio.wait_for(self.websocket.recv(), timeout=10)
            scan(text)
            for value in self.forbidden:
                assert value not in text
            frame = json.loads(text)
            if frame["type"] == kind:
                return frame


def _open(
    host: str, browser: Browser, path: str = "/ws/patient-session/", origin: str | None = None
):
    cookie = "; ".join(f"{c.name}={c.value}" for c in browser.cookies)
    return connect(
        f"ws://{host}{path}",
        origin=origin or f"http://{host}",
        additional_headers={"Cookie": cookie},
        open_timeout=10,
    )


async def test_a_socket_on_one_process_sees_a_cleanup_made_on_another(servers):
    host_a, host_b = servers
    browser, patient_id = await asyncio.to_thread(_signed_in_with_patient, host_b)
    session_key = browser.cookie("sessionid")
    async with _open(host_a, browser) as websocket:
        frames = Frames(websocket, (patient_id, session_key))
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
        ended = await frames.expect("session.ended")
        assert ended["reason"] == "emergency_cleanup"
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(websocket.recv(), timeout=10)
        assert closed.value.rcvd.code == 4001


async def test_refused_handshakes_are_403_on_the_wire(servers):
    host_a, host_b = servers
    browser, _ = await asyncio.to_thread(_signed_in_with_patient, host_b)
    anonymous = Browser(f"http://{host_a}")
    attempts = [
        _open(host_a, anonymous),
        _open(host_a, browser, origin="https://evil.example"),
        _open(host_a, browser, path="/ws/monitor/"),
    ]
    for attempt in attempts:
        with pytest.raises(InvalidStatus) as refused:
            async with attempt:
                pass
        assert refused.value.response.status_code == 403


async def test_staff_on_one_process_end_a_session_held_on_another(servers):
    host_a, host_b = servers
    clinician, patient_id = await asyncio.to_thread(_signed_in_with_patient, host_a)
    staff, _ = await asyncio.to_thread(_signed_in_with_patient, host_b, "staff")
    async with _open(host_a, clinician) as page, _open(host_b, staff, "/ws/monitor/") as monitor:
        forbidden = (patient_id, clinician.cookie("sessionid"), staff.cookie("sessionid"))
        page_frames, monitor_frames = Frames(page, forbidden), Frames(monitor, forbidden)
        ref = (await page_frames.expect("session.state"))["session"]
        snapshot = await monitor_frames.expect("sessions.snapshot")
        assert ref in [row["session"] for row in snapshot["sessions"]]
        await monitor.send(json.dumps({"type": "end_session", "session": ref, "id": 1}))
        assert (await monitor_frames.expect("reply"))["ok"] is True
        assert (await page_frames.expect("session.ended"))["source"] == "staff"
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(page.recv(), timeout=10)
        assert closed.value.rcvd.code == 4001
