"""The channel layer as configured from REDIS_URL survives idle sockets (TRAPS.md:
channels-redis 4.3 + redis-py 8 tear consumers down after 5 s idle unless socket_timeout is
lifted; django/channels_redis#422)."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers
from channels_redis.core import RedisChannelLayer
from django.conf import settings
from django.utils.module_loading import import_string

from tests.redis_server import OwnRedis

pytestmark = pytest.mark.skipif(
    not settings.REDIS_URL, reason="REDIS_URL not set: the in-memory layer is in use"
)


@pytest.fixture
async def layer():
    """A new layer of the configured backend, in this test's event loop: the process-wide one
    of ``get_channel_layer()`` may hold locks and connections of an earlier test's loop."""
    layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
    yield layer
    await layer.close_pools()


def test_the_layer_is_channels_redis_without_a_read_timeout():
    config = settings.CHANNEL_LAYERS["default"]
    assert issubclass(import_string(config["BACKEND"]), RedisChannelLayer)
    assert all(host["socket_timeout"] is None for host in config["CONFIG"]["hosts"])


async def test_a_receive_idle_for_longer_than_redis_timeouts_keeps_working(layer):
    channel = await layer.new_channel()
    # 11 s with nothing to read: redis-py 8's default 5 s socket timeout would raise here.
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive(channel), timeout=11)
    await layer.send(channel, {"type": "still.alive"})
    assert (await asyncio.wait_for(layer.receive(channel), timeout=5))["type"] == "still.alive"


async def test_a_thousand_sockets_joining_and_leaving_at_once_fit_the_layer_pool(layer):
    """redis-py's plain pool raises when its connections run out (TRAPS.md): every membership
    of a burst of 1,000 sockets must be added, and every one removed again."""
    import redis.asyncio as redis

    group = f"burst-{uuid.uuid4().hex}"
    channels = [await layer.new_channel() for _ in range(1000)]
    await asyncio.gather(*(layer.group_add(group, channel) for channel in channels))
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        assert await client.zcard(layer._group_key(group)) == 1000
        await asyncio.gather(*(layer.group_discard(group, channel) for channel in channels))
        assert await client.zcard(layer._group_key(group)) == 0
    finally:
        await client.aclose()


async def test_connections_idle_in_the_pool_through_a_redis_restart_are_not_handed_out(
    settings, tmp_path
):
    """The server closes every connection when it stops. redis-py 8.1 under RESP3 hands the
    ones that sat idle in the pool out again after the restart (redis/redis-py#4252), and
    their next command fails ("Connection closed by server"): the first socket to reconnect
    lost its receive (its connection ended, 1011) or its group membership."""
    own_redis = OwnRedis(tmp_path)
    own_redis.start()
    config = settings.CHANNEL_LAYERS["default"]
    host = {**config["CONFIG"]["hosts"][0], "address": own_redis.url}
    layer = import_string(config["BACKEND"])(**{**config["CONFIG"], "hosts": [host]})
    try:
        before = [await layer.new_channel() for _ in range(5)]
        # Five connections at once, then idle in the pool.
        await asyncio.gather(*(layer.group_add("before", channel) for channel in before))
        own_redis.stop()
        await asyncio.sleep(0.5)  # away for a while: the event loop sees them closed
        own_redis.start()

        channel = await layer.new_channel()
        received = asyncio.ensure_future(layer.receive(channel))
        await layer.group_add("after", channel)
        await layer.group_send_many(["after"], {"type": "news"})
        assert (await asyncio.wait_for(received, timeout=5))["type"] == "news"
    finally:
        await layer.close_pools()
        own_redis.stop()


# One message to several groups (monitor.layers.group_send_many): what one group_send per
# group delivers, in two round trips.


def _groups() -> tuple[str, str]:
    return f"staff-{uuid.uuid4().hex}", f"patient-session.{uuid.uuid4().hex}"


async def _received(layer, channel: str) -> dict:
    return await asyncio.wait_for(layer.receive(channel), timeout=5)


async def test_one_send_reaches_the_members_of_every_group_as_group_send_would(layer):
    staff_group, session_group = _groups()
    staff, tab, other_tab = [await layer.new_channel() for _ in range(3)]
    await layer.group_add(staff_group, staff)
    for channel in (tab, other_tab):
        await layer.group_add(session_group, channel)
    message = {"type": "patient_session.event", "event": {"session_ref": "r", "items": 3}}
    await layer.group_send_many([staff_group, session_group], message)
    for channel in (staff, tab, other_tab):
        assert await _received(layer, channel) == message
    # The same as channels-redis' own group_send delivers.
    await layer.group_send(session_group, message)
    assert await _received(layer, tab) == message


async def test_a_channel_in_both_groups_gets_the_message_twice_as_with_two_group_sends(layer):
    first, second = _groups()
    channel = await layer.new_channel()
    for group in (first, second):
        await layer.group_add(group, channel)
    await layer.group_send_many([first, second], {"type": "one"})
    assert [(await _received(layer, channel))["type"] for _ in range(2)] == ["one", "one"]


async def test_a_full_channel_drops_the_message_and_the_others_still_get_it(layer):
    """Capacity counts per Redis key: the local channels of one layer (a process) share it,
    so the free channel belongs to another layer."""
    other = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
    first, second = _groups()
    full, free = await layer.new_channel(), await other.new_channel()
    await layer.group_add(first, full)
    await layer.group_add(second, free)
    for _ in range(layer.get_capacity(full)):
        await layer.send(full, {"type": "filler"})
    await layer.group_send_many([first, second], {"type": "news"})
    assert (await _received(other, free))["type"] == "news"
    await other.close_pools()
    kinds = [(await _received(layer, full))["type"] for _ in range(layer.get_capacity(full))]
    assert set(kinds) == {"filler"}
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive(full), timeout=0.3)


async def test_expired_memberships_are_dropped_before_the_send(layer):
    first, second = _groups()
    stale, live = await layer.new_channel(), await layer.new_channel()
    await layer.group_add(first, stale)
    await layer.group_add(second, live)
    client = layer.connection(0)
    await client.zadd(layer._group_key(first), {stale: time.time() - layer.group_expiry - 5})
    await layer.group_send_many([first, second], {"type": "news"})
    assert (await _received(layer, live))["type"] == "news"
    assert await client.zcard(layer._group_key(first)) == 0
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive(stale), timeout=0.3)


async def test_the_send_to_two_groups_is_two_round_trips(layer, monkeypatch):
    from redis.asyncio.client import Pipeline, Redis

    first, second = _groups()
    for group in (first, second):
        await layer.group_add(group, await layer.new_channel())
    calls: list[str] = []
    execute_command, execute = Redis.execute_command, Pipeline.execute

    async def command(self, *args, **kwargs):
        calls.append(str(args[0]))
        return await execute_command(self, *args, **kwargs)

    async def pipeline(self, *args, **kwargs):
        calls.append("PIPELINE")
        return await execute(self, *args, **kwargs)

    monkeypatch.setattr(Redis, "execute_command", command)
    monkeypatch.setattr(Pipeline, "execute", pipeline)
    await layer.group_send_many([first, second], {"type": "news"})  # loads the scripts
    calls.clear()
    await layer.group_send_many([first, second], {"type": "news"})
    assert calls == ["EVALSHA", "EVALSHA"]


async def test_redis_down_drops_the_event_with_a_warning(caplog, settings):
    from patient_data import events

    config = settings.CHANNEL_LAYERS["default"]
    host = {**config["CONFIG"]["hosts"][0], "address": "redis://127.0.0.1:1/0"}
    down = {"default": {**config, "CONFIG": {**config["CONFIG"], "hosts": [host]}}}
    channel_layers.backends.clear()
    settings.CHANNEL_LAYERS = down
    try:
        assert not await events.apublish({"session_ref": "r", "items_cleared": 1})
    finally:
        layer = channel_layers.backends.pop(DEFAULT_CHANNEL_LAYER, None)
        if layer is not None:
            await layer.close_pools()
    assert "Live monitor unavailable, event not published (ConnectionError)." in caplog.messages


def _count_commands(monkeypatch) -> list[str]:
    from redis.asyncio.client import Redis

    calls: list[str] = []
    execute_command = Redis.execute_command

    async def command(self, *args, **kwargs):
        calls.append(str(args[0]))
        return await execute_command(self, *args, **kwargs)

    monkeypatch.setattr(Redis, "execute_command", command)
    return calls


async def test_a_process_takes_what_waits_for_its_sockets_in_one_round_trip(layer, monkeypatch):
    """channels-redis takes a process's messages one by one, four round trips each."""
    tabs = [await layer.new_channel() for _ in range(3)]
    for number in range(10):
        for tab in tabs:
            await layer.send(tab, {"type": "frame", "n": number})
    calls = _count_commands(monkeypatch)
    for tab in tabs:
        assert [(await _received(layer, tab))["n"] for _ in range(10)] == list(range(10))
    # One take for the 30, and perhaps, already, the next (empty) take and its wait.
    assert calls[0] == "EVALSHA" and calls[1:] in ([], ["EVALSHA"], ["EVALSHA", "BZPOPMIN"])


async def test_more_than_a_batch_arrives_whole_and_in_order(layer):
    tab = await layer.new_channel()
    count = 2 * layer.receive_batch + 7
    for number in range(count):
        await layer.send(tab, {"type": "frame", "n": number})
    assert [(await _received(layer, tab))["n"] for _ in range(count)] == list(range(count))


async def test_messages_of_a_take_whose_reply_was_never_read_come_again(layer, monkeypatch):
    """A receive cancelled while the take's reply is on its way (a socket closing) loses
    nothing: the next take puts the backed-up messages back first, in their order."""
    from monitor import layers

    tab = await layer.new_channel()
    for number in range(3):
        await layer.send(tab, {"type": "frame", "n": number})
    take = layers._take_script

    async def reply_lost(*args, **kwargs):
        await take(*args, **kwargs)  # done by the server...
        raise asyncio.CancelledError  # ...and the task cancelled before reading the reply

    monkeypatch.setattr(layers, "_take_script", reply_lost)
    with pytest.raises(asyncio.CancelledError):
        await layer.receive(tab)
    monkeypatch.setattr(layers, "_take_script", take)
    await layer.send(tab, {"type": "frame", "n": 3})
    assert [(await _received(layer, tab))["n"] for _ in range(4)] == [0, 1, 2, 3]


async def test_a_read_take_leaves_nothing_to_come_again(layer):
    tab = await layer.new_channel()
    for number in range(2):
        await layer.send(tab, {"type": "frame", "n": number})
        assert (await _received(layer, tab))["n"] == number  # the next take drops the backup
    with pytest.raises(asyncio.TimeoutError):  # so nothing comes twice
        await asyncio.wait_for(layer.receive(tab), timeout=0.5)
    key = layer.prefix + layer.non_local_name(tab)
    client = layer.connection(layer.consistent_hash(layer.non_local_name(tab)))
    assert await client.zcard(key) == 0
    assert await client.exists(layer._backup_channel_name(key)) == 0


async def test_a_backup_expires_if_no_take_follows(layer):
    """A process that stops taking (its last socket closed) leaves no backup for ever."""
    from monitor.layers import _take_script

    key = f"{layer.prefix}test-{uuid.uuid4().hex}!"
    client = layer.connection(0)
    await client.zadd(key, {b"message": time.time()})
    taken = await _take_script([key, f"{key}$inflight"], [0, 10, 60], client=client)
    assert taken[0] == b"message"
    assert 0 < await client.ttl(f"{key}$inflight") <= 60
    await client.delete(f"{key}$inflight")


def _failing_take(monkeypatch, times: int) -> None:
    """The pump's next ``times`` takes fail as a dropped connection does."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    from monitor import layers

    take, left = layers._take_script, [times]

    async def failing(*args, **kwargs):
        if left[0]:
            left[0] -= 1
            raise RedisConnectionError("Connection closed by server.")
        return await take(*args, **kwargs)

    monkeypatch.setattr(layers, "_take_script", failing)


async def test_one_failed_take_is_tried_again_and_no_socket_notices(layer, monkeypatch):
    tabs = [await layer.new_channel() for _ in range(3)]
    _failing_take(monkeypatch, 1)
    waiting = [asyncio.ensure_future(layer.receive(tab)) for tab in tabs]
    for tab in tabs:
        await layer.send(tab, {"type": "frame", "tab": tab})
    received = await asyncio.wait_for(asyncio.gather(*waiting), timeout=5)
    assert [message["tab"] for message in received] == tabs


async def test_a_take_failing_twice_ends_every_waiting_receive_with_the_error(layer, monkeypatch):
    """Redis away: every socket of the process closes (1011) and its page reconnects, as
    channels-redis had them fail one after the other; the next receive takes again."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    tabs = [await layer.new_channel() for _ in range(3)]
    _failing_take(monkeypatch, 2)
    waiting = [asyncio.ensure_future(layer.receive(tab)) for tab in tabs]
    outcomes = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), 5)
    assert all(isinstance(outcome, RedisConnectionError) for outcome in outcomes)
    await layer.send(tabs[0], {"type": "frame", "n": 1})
    assert (await _received(layer, tabs[0]))["n"] == 1


def test_two_event_loops_receiving_at_once_are_refused_as_by_channels_redis():
    """One process's buffers belong to one loop: a second loop receiving at the same time
    (another thread's) is an error, as in channels-redis; a loop closed since is replaced."""
    import threading

    layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
    outcome: list[BaseException | None] = []
    started = threading.Event()
    loop = asyncio.new_event_loop()

    async def first() -> None:
        channel = await layer.new_channel()
        waiting = asyncio.ensure_future(layer.receive(channel))
        await asyncio.sleep(0.2)
        started.set()
        await asyncio.sleep(1)
        waiting.cancel()

    thread = threading.Thread(target=loop.run_until_complete, args=(first(),))
    thread.start()
    started.wait(5)

    async def second() -> None:
        try:
            await asyncio.wait_for(layer.receive(await layer.new_channel()), timeout=0.2)
        except BaseException as error:  # noqa: BLE001 - what it raised is the point
            outcome.append(error)

    asyncio.run(second())
    thread.join()
    loop.close()
    assert isinstance(outcome[0], RuntimeError)

    async def third() -> None:  # the first loop is closed now: a new pump serves this one
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "frame"})
        assert (await asyncio.wait_for(layer.receive(channel), timeout=5))["type"] == "frame"
        await layer.close_pools()

    asyncio.run(third())


async def test_many_memberships_are_added_as_group_add_adds_them_in_few_round_trips(
    layer, monkeypatch
):
    from redis.asyncio.client import Pipeline

    pairs = [(f"patient-session.{uuid.uuid4().hex}", await layer.new_channel()) for _ in range(7)]
    pairs.append((pairs[0][0], await layer.new_channel()))  # two tabs of one session
    executed: list[int] = []
    execute = Pipeline.execute

    async def counted(self, *args, **kwargs):
        executed.append(len(self.command_stack))
        return await execute(self, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "execute", counted)
    monkeypatch.setattr("monitor.layers.RENEW_CHUNK", 5)
    calls = _count_commands(monkeypatch)
    await layer.group_add_many(pairs)
    assert calls == [] and executed == [10, 6]  # ZADD + EXPIRE per pair, 5 pairs a pipeline
    client = layer.connection(0)
    for group, channel in pairs:
        key = layer._group_key(group)
        assert await client.zscore(key, channel) is not None
        assert 0 < await client.ttl(key) <= layer.group_expiry
    message = {"type": "patient_session.event", "event": {"n": 1}}
    await layer.group_send_many([pairs[0][0]], message)
    for _, channel in (pairs[0], pairs[-1]):
        assert await _received(layer, channel) == message


async def test_a_socket_gone_leaves_no_buffer(layer):
    """As with channels-redis: a receive cancelled (its socket closed) drops its channel's
    buffer, so closed sockets do not pile up in the process."""
    going = await layer.new_channel()
    waiting = asyncio.ensure_future(layer.receive(going))
    await asyncio.sleep(0.1)
    assert going in layer.receive_buffer
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert going not in layer.receive_buffer


async def test_what_the_pump_buffered_is_taken_without_a_wait_in_its_order(layer):
    tab = await layer.new_channel()
    for number in range(5):
        await layer.send(tab, {"type": "frame", "n": number})
    first = await _received(layer, tab)  # the pump takes all five in one round trip
    rest = [layer.receive_nowait(tab) for _ in range(4)]
    assert [first["n"], *(message["n"] for message in rest)] == list(range(5))
    assert layer.receive_nowait(tab) is None  # nothing more buffered: no wait, no message
    assert tab not in layer.receive_buffer  # and no buffer left behind


async def test_a_failed_take_buffered_for_a_socket_is_raised_by_the_taking_without_a_wait(
    layer,
):
    from monitor.layers import _Failed

    tab = await layer.new_channel()
    layer.receive_buffer[tab].put_nowait(_Failed(ConnectionError("away")))
    with pytest.raises(ConnectionError):
        layer.receive_nowait(tab)
