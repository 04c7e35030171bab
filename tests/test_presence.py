"""Presence: open sockets per session across processes, the grace, heartbeats, the reaper.

Every behaviour runs on both stores (the database, and Redis when one answers). Time is a
fake clock handed to the stores, so expiry and grace are tested without sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid

import pytest
import redis
from django.db import connection

from monitor import presence as presence_api
from monitor.models import PresenceDue, PresenceProcess, PresenceSocket
from monitor.presence import Presence
from monitor.presence_stores import DatabaseStore, PresenceStore, RedisStore
from patient_data import patient_session
from patient_data.models import CleanupEvent
from patient_data.refs import session_ref
from patient_data.sessions.db import SessionStore
from tests.bulk_support import REDIS_URL, redis_or_skip
from tests.redis_server import OwnRedis

pytestmark = pytest.mark.django_db(transaction=True)

TTL = 10.0
GRACE = 10.0
T0 = 1_800_000_000.0
A, B = "a" * 32, "b" * 32  # two processes
REF, OTHER = "1" * 32, "2" * 32  # two sessions


@pytest.fixture(params=["database", "redis"])
def store(request):
    if request.param == "database":
        yield DatabaseStore()
        return
    redis_or_skip()
    prefix = f"test-presence-{uuid.uuid4().hex}"
    yield RedisStore(REDIS_URL, prefix)
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}:*"))
    if keys:
        client.delete(*keys)


async def _leftovers(store: PresenceStore) -> int:
    """Entries the store still keeps, of any kind."""
    if isinstance(store, RedisStore):
        return len([key async for key in store.client.scan_iter(match=f"{store.prefix}:*")])
    counts = [PresenceProcess.objects.acount(), PresenceSocket.objects.acount()]
    return sum(await asyncio.gather(*counts, PresenceDue.objects.acount()))


async def test_sockets_of_one_session_are_counted_across_processes(store):
    assert await store.join(REF, "s1", A, T0, TTL) == (False, 1)
    assert await store.join(REF, "s2", B, T0, TTL) == (False, 2)
    assert await store.join(REF, "s3", A, T0, TTL) == (True, 3)
    assert await store.join(OTHER, "s4", B, T0, TTL) == (True, 1)
    assert await store.count(REF, T0) == 3
    assert await store.leave(REF, "s1", A, T0, GRACE) == 2
    assert await store.leave(REF, "s2", B, T0, GRACE) == 1
    assert await store.count(OTHER, T0) == 1
    assert await store.count("never-seen", T0) == 0


async def test_a_closed_session_is_claimed_once_after_the_grace(store):
    await store.join(REF, "s1", A, T0, TTL)
    assert await store.leave(REF, "s1", A, T0 + 1, GRACE) == 0
    await store.beat(A, T0 + 5, TTL)
    assert (await store.reap(T0 + 5, GRACE)).claimed == []
    assert (await store.reap(T0 + 1 + GRACE - 0.01, GRACE)).next_due == T0 + 1 + GRACE
    await store.beat(A, T0 + 11.5, TTL)
    assert (await store.reap(T0 + 11.5, GRACE)).claimed == [REF]
    assert (await store.reap(T0 + 12, GRACE)).claimed == []


async def test_a_socket_back_within_the_grace_keeps_the_session(store):
    await store.join(REF, "page-1", A, T0, TTL)
    await store.leave(REF, "page-1", A, T0 + 1, GRACE)
    assert await store.join(REF, "page-2", B, T0 + 2, TTL) == (False, 1)
    for later in (T0 + 12, T0 + 20):
        await store.beat(B, later, TTL)
        assert (await store.reap(later, GRACE)).claimed == []


async def test_another_tab_still_open_keeps_the_session(store):
    await store.join(REF, "tab-1", A, T0, TTL)
    await store.join(REF, "tab-2", A, T0, TTL)
    assert await store.leave(REF, "tab-1", A, T0, GRACE) == 1
    await store.beat(A, T0 + 9, TTL)
    assert (await store.reap(T0 + 15, GRACE)).claimed == []


async def test_sockets_of_a_process_that_stops_beating_expire(store):
    await store.join(REF, "s1", A, T0, TTL)
    await store.join(OTHER, "s2", B, T0, TTL)
    assert await store.beat(B, T0 + 8, TTL) is True
    assert await store.count(REF, T0 + TTL - 0.01) == 1
    assert await store.count(REF, T0 + TTL + 0.01) == 0
    assert await store.count(OTHER, T0 + TTL + 0.01) == 1
    # A's expiry is T0 + TTL; its session is due a grace later, not a grace after the reap.
    reaped = await store.reap(T0 + TTL + 1, GRACE)
    assert reaped.claimed == [] and reaped.next_due == T0 + TTL + GRACE
    assert (await store.reap(T0 + TTL + GRACE + 0.01, GRACE)).claimed == [REF]
    assert await store.beat(A, T0 + 30, TTL) is False


async def test_a_beat_keeps_a_process_sockets_alive(store):
    await store.join(REF, "s1", A, T0, TTL)
    assert await store.beat(A, T0 + 6, TTL) is True
    assert await store.count(REF, T0 + TTL + 5) == 1
    assert (await store.reap(T0 + TTL + 5, GRACE)).claimed == []


async def test_nothing_is_left_behind_once_sessions_are_reaped(store):
    for index in range(20):
        await store.join(f"ref-{index}", f"s{index}", A if index % 2 else B, T0, TTL)
    for index in range(0, 20, 4):
        await store.leave(f"ref-{index}", f"s{index}", B, T0, GRACE)
    claimed = (await store.reap(T0 + TTL + GRACE + 1, GRACE)).claimed
    assert sorted(claimed) == sorted(f"ref-{index}" for index in range(20))
    assert await _leftovers(store) == 0


async def test_register_replaces_what_the_store_knew_of_a_process(store):
    await store.join(REF, "kept", A, T0, TTL)
    await store.join(OTHER, "lost-while-away", A, T0, TTL)
    await store.register(A, {"kept": REF, "new": "3" * 32}, T0 + 1, TTL, GRACE)
    assert await store.count(REF, T0 + 1) == 1
    assert await store.count("3" * 32, T0 + 1) == 1
    assert await store.count(OTHER, T0 + 1) == 0
    assert (await store.reap(T0 + 1 + GRACE + 0.01, GRACE)).claimed == [OTHER]


async def test_two_reapers_at_once_claim_each_session_exactly_once(store):
    refs = [f"ref-{index:03d}" for index in range(60)]
    for index, ref in enumerate(refs):
        await store.join(ref, f"s{index}", A, T0, TTL)
        await store.leave(ref, f"s{index}", A, T0, GRACE)
    now = T0 + GRACE + 1
    if isinstance(store, RedisStore):
        other = RedisStore(REDIS_URL, store.prefix.removesuffix(":presence"))
        first, second = await asyncio.gather(store.reap(now, GRACE), other.reap(now, GRACE))
        await other.close()
        results = [first.claimed, second.claimed]
    else:
        results = await asyncio.to_thread(_reap_in_two_threads, now)
    assert sorted(results[0] + results[1]) == refs


def _reap_in_two_threads(now: float) -> list[list[str]]:
    results: list[list[str]] = [[], []]
    start = threading.Barrier(2)

    def reap(slot: int) -> None:
        start.wait()
        try:
            results[slot] = DatabaseStore._reap(now, GRACE).claimed
        finally:
            connection.close()

    threads = [threading.Thread(target=reap, args=(slot,)) for slot in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Failing(PresenceStore):
    """A store whose every call fails, as Redis does while it is down."""

    async def _down(self, *args):
        raise redis.ConnectionError("down")

    join = leave = count = beat = register = reap = _down


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cleared() -> list[str]:
    return []


def _presence(store: PresenceStore, clock: Clock, cleared: list[str]) -> Presence:
    async def clear(ref: str) -> int:
        cleared.append(ref)
        return 1

    return Presence(store, clear=clear, clock=clock)


@pytest.fixture(autouse=True)
def _short_presence(settings):
    settings.PATIENT_PRESENCE_HEARTBEAT = TTL / 2
    settings.PATIENT_DISCONNECT_GRACE = GRACE


async def test_presence_fails_soft_with_one_warning(clock, cleared, caplog):
    presence = _presence(Failing(), clock, cleared)
    with caplog.at_level(logging.WARNING, logger="monitor.presence"):
        assert await presence.join(REF, "s1") == 1
        assert await presence.join(REF, "s2") == 2
        assert await presence.count(REF) == 2
        assert await presence.leave(REF, "s1") == 1
        assert await presence.tick() is None
    await presence.stop()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "Presence store unavailable" in warnings[0].getMessage()
    assert REF not in caplog.text
    assert cleared == []


async def test_the_reaper_waits_until_the_store_answered_for_expiry_plus_grace(
    store, clock, cleared
):
    presence = _presence(store, clock, cleared)
    await presence.join(REF, "s1")
    await presence.leave(REF, "s1")
    clock.now += GRACE + 1
    await presence.tick()
    assert cleared == []
    clock.now = presence.reachable_since + TTL + GRACE + 0.01
    await presence.tick()
    assert cleared == [REF]
    await presence.stop()


async def test_a_process_catches_up_what_it_missed_while_the_store_failed(store, clock, cleared):
    presence = _presence(store, clock, cleared)
    await presence.join(REF, "open-all-along")
    await presence.join(OTHER, "closed-while-away")
    real = presence.store
    presence.store = Failing()
    await presence.leave(OTHER, "closed-while-away")
    await presence.join("3" * 32, "opened-while-away")
    presence.store = real
    clock.now += 1
    await presence.tick()
    assert [await real.count(ref, clock.now) for ref in (REF, OTHER, "3" * 32)] == [1, 0, 1]
    clock.now += TTL + GRACE + 1
    await presence.tick()
    assert cleared == [OTHER]
    await presence.stop()


async def _advance(clock: Clock, seconds: float, *presences: Presence) -> None:
    """Let ``seconds`` pass as the background tasks would: a tick every half heartbeat."""
    end = clock.now + seconds
    while clock.now < end:
        clock.now = min(end, clock.now + TTL / 4)
        for presence in presences:
            await presence.tick()


async def test_redis_stopped_and_started_again_clears_only_what_really_closed(
    tmp_path, clock, cleared, caplog
):
    """A real outage: our own redis-server stops (its data saved) while sockets are open,
    stays away beyond every expiry, and starts again with the stale data."""
    killed_ref = "4" * 32
    server = OwnRedis(tmp_path)
    server.start()
    try:
        web, doomed = (_presence(RedisStore(server.url, "t"), clock, cleared) for _ in "ab")
        await web.join(REF, "open-all-along")
        await web.join(OTHER, "closed-during-outage")
        await doomed.join(killed_ref, "on-a-process-killed-during-outage")
        await _advance(clock, 5, web, doomed)
        server.stop(save=True)

        with caplog.at_level(logging.WARNING, logger="monitor.presence"):
            assert await web.leave(OTHER, "closed-during-outage") == 0
            assert await web.join(REF, "second-tab") == 2
            assert await web.tick() is None
        assert "Presence store unavailable (leave: ConnectionError)" in caplog.text
        clock.now += 3 * (TTL + GRACE)

        server.start()
        survivor = _presence(RedisStore(server.url, "t"), clock, cleared)
        # Every process looks dead to the restarted Redis: reaping now would clear REF.
        await survivor.tick()
        await web.tick()
        assert await survivor.count(REF) == 2
        await _advance(clock, TTL + GRACE, survivor, web)
        assert cleared == []
        await _advance(clock, TTL / 4, survivor, web)
        assert sorted(cleared) == sorted([OTHER, killed_ref])
        assert await survivor.count(REF) == 2
        for presence in (web, doomed, survivor):
            await presence.stop()
    finally:
        server.stop()


async def test_the_redis_store_replaces_the_connections_a_restart_closed(tmp_path):
    """Connections idle in the pool while Redis restarts are closed by the server; the pool
    must not hand them out again (redis/redis-py#4252: "Connection closed by server")."""
    server = OwnRedis(tmp_path)
    server.start()
    store = RedisStore(server.url, "t")
    try:
        # Five connections at once, then idle in the pool.
        await asyncio.gather(*(store.join(REF, f"tab-{n}", A, T0, TTL) for n in range(5)))
        server.stop()
        await asyncio.sleep(0.5)  # away for a while: the event loop sees them closed
        server.start()
        assert await store.join(OTHER, "after-the-restart", A, T0, TTL) == (False, 1)
    finally:
        await store.client.aclose()
        server.stop()


async def test_a_closed_tab_clears_the_session_through_the_cleanup_service(clock):
    session = SessionStore()
    await session.aset("_auth_user_id", "7")
    await patient_session.astore(session, "patient_summary", {"problems": ["SYNTH-P"]})
    await session.asave()
    ref = session_ref(session.session_key)
    presence = Presence(DatabaseStore(), clock=clock)
    await presence.join(ref, "only-tab")
    await presence.leave(ref, "only-tab")
    await _advance(clock, TTL + GRACE + 1, presence)
    await presence.stop()
    assert "patient_summary" not in await SessionStore(session.session_key).aload()
    event = await CleanupEvent.objects.aget()
    assert (event.reason, event.source, event.items_cleared) == ("browser_closed", "presence", 1)
    assert event.session_ref == ref


@pytest.mark.parametrize("backend", ["database", "redis"])
async def test_the_module_api_counts_and_starts_one_background_task(backend, settings):
    if backend == "redis":
        redis_or_skip()
        settings.REDIS_URL, settings.REDIS_PREFIX = REDIS_URL, f"test-presence-{uuid.uuid4().hex}"
    else:
        settings.REDIS_URL = ""
    assert await presence_api.acount(REF) == 0
    assert presence_api.current().task is None
    assert await presence_api.ajoin(REF, "s1") == 1
    task = presence_api.current().task
    assert task is not None and not task.done()
    assert await presence_api.ajoin(REF, "s2") == 2
    assert presence_api.current().task is task
    assert await presence_api.aleave(REF, "s1") == 1
    assert await presence_api.acount(REF) == 1
    assert await presence_api.aleave(REF, "s2") == 0
    await presence_api.astop()
    assert task.cancelled()


async def test_a_socket_whose_connection_ended_without_a_leave_is_reaped(store, clock, cleared):
    presence = _presence(store, clock, cleared)
    connection_task = asyncio.create_task(presence.join(REF, "crashed-consumer"))
    assert await connection_task == 1
    await presence.join(OTHER, "still-serving")
    await presence.tick()
    assert await presence.count(REF) == 0
    assert await presence.count(OTHER) == 1
    await _advance(clock, TTL + GRACE + 1, presence)
    assert cleared == [REF]
    await presence.stop()
