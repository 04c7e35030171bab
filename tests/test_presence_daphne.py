"""Presence end to end: real daphne processes, real Redis, the suite's database.

Closing a session's only tab clears its patient data a grace later; a tab reconnecting within
the grace (to any process) clears nothing; the sessions of a process killed with ``kill -9``
are cleared by another process once presence expires; and Redis stopped while serving
degrades only the live view. The servers run with a grace of 2 s and a heartbeat of 1 s.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
import uuid

import pytest
import redis
from asgiref.sync import sync_to_async
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model

from patient_data import patient_session
from patient_data.models import CleanupEvent
from patient_data.refs import session_ref
from patient_data.registry import META_KEY
from patient_data.sessions.db import SessionStore
from tests.bulk_support import REDIS_URL, redis_or_skip
from tests.live_servers import SECRET_KEY, Daphne, eventually, open_tab
from tests.redis_server import OwnRedis

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis]

CSRF = "c" * 32


@pytest.fixture(autouse=True)
def _servers_secret(settings):
    # Sessions made here must verify in the servers: the same secret (and so the same refs).
    settings.SECRET_KEY = SECRET_KEY


@pytest.fixture(scope="module")
def prefix():
    """The servers' Redis key prefix; what they left under it goes once they have stopped."""
    redis_or_skip()
    prefix = f"test-presence-e2e-{uuid.uuid4().hex[:8]}"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)


@pytest.fixture(scope="module")
def servers(django_db_setup, prefix, tmp_path_factory):
    """Two daphne processes serving the same sessions, as behind a load balancer."""
    logs = tmp_path_factory.mktemp("daphne-logs")
    started = []
    try:
        for name in "ab":
            started.append(Daphne(REDIS_URL, prefix, logs / f"{name}.log"))
        yield started
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def clinician(transactional_db):
    return get_user_model().objects.create_user("clinician", password="synthetic-pass-1")


async def _session(user, *, idle_for: float = 0) -> str:
    """A signed-in session holding patient data; its key."""
    session = SessionStore()
    await session.aset(SESSION_KEY, str(user.pk))
    await session.aset(BACKEND_SESSION_KEY, "django.contrib.auth.backends.ModelBackend")
    await session.aset(HASH_SESSION_KEY, user.get_session_auth_hash())
    await patient_session.astore(session, "patient_summary", {"problems": ["SYNTH-P"]})
    if idle_for:
        meta = await session.aget(META_KEY)
        await session.aset(META_KEY, {**meta, "seen": time.time() - idle_for})
    await session.asave()
    return session.session_key


async def _holds_patient_data(key: str) -> bool:
    return "patient_summary" in await SessionStore(key).aload()


def _cleared(key: str):
    async def check() -> bool:
        return not await _holds_patient_data(key)

    return check


async def _closed_tab_cleanups(key: str) -> list[tuple[str, str]]:
    rows = CleanupEvent.objects.filter(session_ref=session_ref(key), reason="browser_closed")
    return [(row.reason, row.source) async for row in rows]


async def test_closing_the_only_tab_clears_the_patient_data_after_the_grace(servers, clinician):
    key = await _session(clinician)
    tab = await open_tab(servers[0], key)
    state = await tab.next("session.state")
    assert state["has_patient_data"] is True and state["open_tabs"] == 1
    await tab.close()
    assert await eventually(_cleared(key))
    assert await _closed_tab_cleanups(key) == [("browser_closed", "presence")]


async def test_a_tab_back_within_the_grace_on_another_process_clears_nothing(servers, clinician):
    staying, control = await _session(clinician), await _session(clinician)
    first, other = await open_tab(servers[0], staying), await open_tab(servers[0], control)
    await first.next("session.state")
    await other.next("session.state")
    await first.close()
    await other.close()
    next_page = await open_tab(servers[1], staying)
    assert (await next_page.next("session.state"))["has_patient_data"] is True
    # The control closed after ``staying`` did: once it is cleared, the reaper has passed
    # the moment ``staying`` would have been due.
    assert await eventually(_cleared(control))
    assert await _holds_patient_data(staying)
    assert await _closed_tab_cleanups(staying) == []
    await next_page.close()


async def test_a_process_killed_with_open_tabs_has_its_sessions_cleared_by_another(
    servers, clinician, prefix, tmp_path
):
    watched, orphaned = await _session(clinician), await _session(clinician)
    watcher = await open_tab(servers[0], watched)
    await watcher.next("session.state")
    victim = Daphne(REDIS_URL, prefix, tmp_path / "victim.log")
    try:
        tab = await open_tab(victim, orphaned)
        assert (await tab.next("session.state"))["open_tabs"] == 1
        victim.kill()
        assert await eventually(_cleared(orphaned))
    finally:
        victim.stop()
    assert await _closed_tab_cleanups(orphaned) == [("browser_closed", "presence")]
    assert await _holds_patient_data(watched)
    await watcher.close()


def _http(server: Daphne, path: str, key: str, *, post: bool = False) -> tuple[int, dict]:
    headers = {"Cookie": f"sessionid={key}; csrftoken={CSRF}"}
    if post:
        headers["X-CSRFToken"] = CSRF
    url = f"http://127.0.0.1:{server.port}{path}"
    request = urllib.request.Request(url, data=b"" if post else None, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=20) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


async def _reconnect(server: Daphne, key: str):
    """What the page does after losing its socket: retry until a new one is greeted."""

    async def attempt():
        try:
            tab = await open_tab(server, key)
            return tab, await tab.next("session.state", timeout=5)
        except Exception:  # noqa: BLE001 - refused, reset or silent: the page retries
            return None

    return await eventually(attempt, interval=0.5)


async def test_redis_stopped_while_serving_degrades_only_the_live_view(tmp_path, clinician):
    own_redis = OwnRedis(tmp_path)
    own_redis.start()
    server = Daphne(own_redis.url, "outage", tmp_path / "daphne.log")
    try:
        open_all_along = await _session(clinician)
        tab = await open_tab(server, open_all_along)
        assert (await tab.next("session.state"))["open_tabs"] == 1
        own_redis.stop(save=True)

        cleaned, idle = await _session(clinician), await _session(clinician, idle_for=7200)
        status, body = await sync_to_async(_http)(
            server, "/api/clear-patient-session/", cleaned, post=True
        )
        assert (status, body["items_cleared"]) == (200, 1)
        assert not await _holds_patient_data(cleaned)
        status, body = await sync_to_async(_http)(server, "/api/session-status/", idle)
        assert status == 200 and body["has_patient_data"] is False
        assert not await _holds_patient_data(idle)
        assert "event not published" in server.logged()
        await asyncio.sleep(2 * 2 + 2)  # past two heartbeats and the grace, with Redis away

        own_redis.start()
        restarted = len(server.logged())
        tab, state = await _reconnect(server, open_all_along)
        assert state["has_patient_data"] is True
        assert await eventually(lambda: _open_tabs(tab, 1))
        control = await _session(clinician)
        control_tab = await open_tab(server, control)
        await control_tab.next("session.state")
        await control_tab.close()
        assert await eventually(_cleared(control))
        assert await _holds_patient_data(open_all_along)
        assert await _closed_tab_cleanups(open_all_along) == []
        assert "Presence store unavailable" in server.logged()
        assert " 500 " not in server.logged()
        # No connection closed by the restart is used again (monitor.layers.blocking_pool).
        after_restart = server.logged()[restarted:]
        assert "Socket ended by a failure (ConnectionError)" not in after_restart
        assert "not published (ConnectionError)" not in after_restart
        await tab.close()
    finally:
        server.stop()
        own_redis.stop()


async def _open_tabs(tab, expected: int) -> bool:
    await tab.ws.send(json.dumps({"type": "status"}))
    return (await tab.next("session.state"))["open_tabs"] == expected


def _activity_on(server: Daphne, key: str) -> int:
    """What the page sends for user input without a socket: ``HEAD /`` (not passive)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}/", method="HEAD", headers={"Cookie": f"sessionid={key}"}
    )
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=20) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


async def test_activity_on_one_process_moves_the_deadline_a_warned_tab_on_another_waits_for(
    servers, clinician
):
    # The idle deadline is 4 s away: the tab on process A is warned at once. Activity recorded
    # by process B moves it 30 minutes on; A's timer (woken: it had warned) must not clear.
    key = await _session(clinician, idle_for=30 * 60 - 4)
    tab = await open_tab(servers[0], key)
    assert (await tab.next("session.timeout_warning"))["reason"] == "patient_session_timeout"
    assert await sync_to_async(_activity_on)(servers[1], key) in (200, 301, 302)
    activity = await tab.next("session.activity")
    assert activity["items"] == 1 and activity["idle_seconds_left"] > 29 * 60
    await asyncio.sleep(6)  # past the old deadline
    assert await _holds_patient_data(key)
    assert "session.cleared" not in [frame["type"] for frame in tab.frames]
    await tab.close()
