"""The channel layer on Redis: a connection pool that waits instead of failing, one send of a
message to several groups, and a process's messages taken in batches.

channels-redis builds redis-py's plain pool, which raises ``MaxConnectionsError`` as soon as
its connections are all in use: a thousand sockets closing at once (each leaving its groups
and announcing its open tabs) then lose group discards and events (TRAPS.md). A blocking pool
makes the burst queue for a connection (``max_connections``, waiting up to ``timeout`` s).

The pool must hand out live connections, also after a Redis restart
(``patient_data.redis_pools``).

Every live event goes to two groups (the staff monitor's and the session's). channels-redis'
``group_send`` costs four round trips per group (expire and read the members, expire the
channels' old messages, the capacity-checked send); :meth:`group_send_many` does what one
``group_send`` per group does, in two round trips (two Lua scripts) per Redis server for all
the groups: the same message format (channels-redis' own serializer and per-key
``__asgi_channel__`` lists), capacity, message and group expiry. :meth:`group_sends` sends
several messages so (an HTTP cleanup's ``session.cleared`` and ``session.activity``), still in
two round trips, each channel getting them in the order given.

Every message a process receives (its sockets' frames, whatever their group) comes off one
queue, the process's channel. channels-redis takes them one at a time, in four round trips
each (restore its backup, ``BZPOPMIN``, back the message up, drop the backup), and hands the
taking from socket to socket: each of a thousand waiting receives holds a task on a shared
lock and builds two new tasks for every message. Here one task per process (the *pump*)
takes all that is waiting (up to ``receive_batch``) in one script, blocks in ``BZPOPMIN`` only
when nothing is, and puts each message in its socket's buffer, where that socket's receive
simply waits. Nothing is lost to a cancelled take, as with channels-redis: the script backs
up what it hands out, and the next take restores that backup unless the reply was read. A
take that fails is tried once more (a connection dropped alone is no outage); a second
failure (Redis away) ends every waiting receive with it, as channels-redis ended them one
after the other: the sockets close (1011) and the pages reconnect.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

from channels_redis.core import RedisChannelLayer
from redis.asyncio import BlockingConnectionPool
from redis.commands.core import AsyncScript

from patient_data import redis_pools

logger = logging.getLogger("monitor.layers")

#: KEYS: group keys. ARGV[1]: the score below which a membership has expired. Each group's
#: channels, its expired memberships dropped first (as group_send does).
MEMBERS_LUA = b"""
local found = {}
for i, key in ipairs(KEYS) do
    redis.call('ZREMRANGEBYSCORE', key, 0, ARGV[1])
    found[i] = redis.call('ZRANGE', key, 0, -1)
end
return found
"""

#: KEYS: channel keys (a key twice when two groups reach it: two messages, as two
#: group_sends would). ARGV: the messages, their capacities, their scores (the send's time,
#: later for a later message of the same call), then the expiry, and the score below which a
#: channel's messages have expired. channels-redis' send script, with its expiry pipeline
#: folded in.
SEND_LUA = b"""
local n = #KEYS
local expiry = ARGV[3 * n + 1]
local expired = ARGV[3 * n + 2]
for i = 1, n do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, expired)
end
local over_capacity = 0
for i = 1, n do
    if redis.call('ZCOUNT', KEYS[i], '-inf', '+inf') < tonumber(ARGV[n + i]) then
        redis.call('ZADD', KEYS[i], ARGV[2 * n + i], ARGV[i])
        redis.call('EXPIRE', KEYS[i], expiry)
    else
        over_capacity = over_capacity + 1
    end
end
return over_capacity
"""

#: KEYS[1]: a process's channel, KEYS[2]: its backup (what the last take handed out).
#: ARGV[1]: 1 when the last take's reply may not have been read (its messages go back first,
#: in their order), ARGV[2]: at most how many messages to take, ARGV[3]: the backup's expiry.
#: Returns the messages and their scores, oldest first (``ZPOPMIN``).
TAKE_LUA = b"""
if ARGV[1] == '1' then
    local backed_up = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
    for i = #backed_up, 1, -2 do
        redis.call('ZADD', KEYS[1], backed_up[i], backed_up[i - 1])
    end
end
redis.call('DEL', KEYS[2])
local taken = redis.call('ZPOPMIN', KEYS[1], ARGV[2])
for i = 1, #taken, 2 do
    redis.call('ZADD', KEYS[2], taken[i + 1], taken[i])
end
if #taken > 0 then
    redis.call('EXPIRE', KEYS[2], ARGV[3])
end
return taken
"""

#: Memberships per pipeline of :meth:`BlockingPoolRedisChannelLayer.group_add_many`.
RENEW_CHUNK = 500

#: The pump's pause before it tries a failed take once more.
RETRY_PAUSE = 0.1

#: How much later the score of each next message of one :meth:`group_sends` is. A channel
#: takes its messages lowest score first, and channels-redis' serializer starts each with
#: random bytes: under one score two messages would come in a random order. A few ulps of
#: ``time.time()`` (2.4e-7 s until 2038), far below the time between two calls.
ORDER_STEP = 1e-6

#: Sent by SHA (EVALSHA), loaded again when the server does not know it (a restart).
_members_script = AsyncScript(None, MEMBERS_LUA)
_send_script = AsyncScript(None, SEND_LUA)
_take_script = AsyncScript(None, TAKE_LUA)


def blocking_pool(url: str, **options: Any) -> BlockingConnectionPool:
    """redis-py's blocking pool for ``url``, which replaces a connection the server closed
    while it sat idle instead of handing it out (``patient_data.redis_pools``)."""
    return BlockingConnectionPool.from_url(url, **redis_pools.checked(options))


class BlockingPoolRedisChannelLayer(RedisChannelLayer):
    """``RedisChannelLayer`` whose hosts (``{"address": url, ...}``) get a blocking pool, with
    :meth:`group_send_many`, taking a process's messages in batches."""

    #: At most this many messages of the process's channel per round trip.
    receive_batch = 100

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read: set[str] = set()  # process channels whose last take's reply was read
        self._pumps: dict[str, asyncio.Task] = {}  # by process channel
        self._waiting = 0  # receives of this process's channels under way

    async def receive(self, channel: str) -> dict[str, Any]:
        """The next message of ``channel``; a process's channels (``!``) from their pump."""
        if "!" not in channel:
            return await super().receive(channel)
        assert self.require_valid_channel_name(channel)
        real_channel = self.non_local_name(channel)
        assert real_channel.endswith(self.client_prefix + "!"), "Wrong client prefix"
        self._start_pump(real_channel)
        queue = self.receive_buffer[channel]
        self._waiting += 1
        try:
            message = await queue.get()
        except asyncio.CancelledError:
            # The socket is going (channels-redis drops its buffer too): nothing stays behind.
            if self.receive_buffer.get(channel) is queue:
                del self.receive_buffer[channel]
            raise
        finally:
            self._waiting -= 1
        return self._taken(channel, queue, message)

    def receive_nowait(self, channel: str) -> dict[str, Any] | None:
        """The next message of a process's channel if its pump has buffered one, else None:
        no wait. A consumer that handled one message takes those that came with it this way
        (``monitor.consumers``) instead of waiting for each in a turn of the event loop."""
        queue = self.receive_buffer.get(channel)
        if queue is None or queue.empty():
            return None
        return self._taken(channel, queue, queue.get_nowait())

    def _taken(self, channel: str, queue: asyncio.Queue, message: Any) -> dict[str, Any]:
        """``message``, just taken off ``channel``'s buffer ``queue``: an emptied buffer is
        dropped (nothing stays behind for a socket that goes), a failed take raised."""
        if queue.empty() and self.receive_buffer.get(channel) is queue:
            del self.receive_buffer[channel]
        if isinstance(message, _Failed):
            raise message.error
        return message

    def _start_pump(self, real_channel: str) -> None:
        pump, loop = self._pumps.get(real_channel), asyncio.get_running_loop()
        if pump is not None and not pump.done():
            if pump.get_loop() is loop:
                return
            if not pump.get_loop().is_closed():  # as channels-redis refuses it
                raise RuntimeError(
                    "Two event loops are trying to receive() on one channel layer at once!"
                )
        pump = loop.create_task(self._run_pump(real_channel), name=f"pump {real_channel}")
        self._pumps[real_channel] = pump

    async def _run_pump(self, real_channel: str) -> None:
        """Take a process channel's messages into its sockets' buffers while any receive."""
        index, key = self.consistent_hash(real_channel), self.prefix + real_channel
        retried = False
        try:
            while True:
                try:
                    members = await self._take(index, key, self.brpop_timeout)
                except Exception:
                    if retried:
                        raise
                    retried = True  # once, on a fresh connection: one dropped one is no outage
                    await asyncio.sleep(RETRY_PAUSE)
                    continue
                retried = False
                for member in members:
                    self._deliver(self.deserialize(member))
                if not members and not self._waiting:
                    return  # idle for brpop_timeout s with nobody receiving
        except BaseException as error:  # handed to every receive that waits
            for queue in list(self.receive_buffer.values()):
                with contextlib.suppress(RuntimeError):  # a receive of a loop closed since
                    queue.put_nowait(_Failed(error))
            if not isinstance(error, Exception):
                raise  # cancelled (the layer closes): the waiting receives end with it

    def _deliver(self, message: dict[str, Any]) -> None:
        # A message for a process's channel always names its channel(s) (channels-redis' send).
        channels = message.pop("__asgi_channel__", [])
        for name in channels if isinstance(channels, list) else [channels]:
            self.receive_buffer[name].put_nowait(message)

    async def _stop_pumps(self) -> None:
        pumps, self._pumps = list(self._pumps.values()), {}
        loop = asyncio.get_running_loop()
        for pump in pumps:
            if not pump.done() and pump.get_loop() is loop:
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pump

    async def _take(self, index: int, key: str, timeout: int) -> list[bytes]:
        """What waits on the process channel ``key``, oldest first (up to ``receive_batch``),
        in one round trip; else the first message to arrive within ``timeout`` s ([]: none)."""
        connection = self.connection(index)
        restore = key not in self._read
        self._read.discard(key)
        args = [int(restore), self.receive_batch, int(self.expiry)]
        reply = await _take_script([key, self._backup_channel_name(key)], args, client=connection)
        self._read.add(key)  # no await since the reply: all of it is in hand
        if reply:
            return reply[0::2]
        # Nothing waiting: block. A message popped here is in hand once the reply is read;
        # channels-redis backs it up only after that read, which protects nothing more.
        result = await connection.bzpopmin(key, timeout=timeout)
        return [] if result is None else [result[1]]

    async def flush(self) -> None:
        await self._stop_pumps()
        self._read.clear()
        await super().flush()

    async def close_pools(self) -> None:
        await self._stop_pumps()
        await super().close_pools()

    def create_pool(self, index: int) -> BlockingConnectionPool:
        host = dict(self.hosts[index])
        return blocking_pool(host.pop("address"), **host)

    async def group_add_many(self, memberships: Sequence[tuple[str, str]]) -> None:
        """``group_add(group, channel)`` for each pair (same score, same expiry), in one
        pipeline per server and ``RENEW_CHUNK`` pairs: a process renewing the memberships of
        its thousand sockets makes a few round trips, not two thousand in a row."""
        now = time.time()
        by_connection: dict[int, list[tuple[str, str]]] = collections.defaultdict(list)
        for group, channel in memberships:
            assert self.require_valid_group_name(group), "Group name not valid"
            assert self.require_valid_channel_name(channel), "Channel name not valid"
            by_connection[self.consistent_hash(group)].append((self._group_key(group), channel))
        for index, pairs in by_connection.items():
            for start in range(0, len(pairs), RENEW_CHUNK):
                async with self.connection(index).pipeline(transaction=False) as pipe:
                    for key, channel in pairs[start : start + RENEW_CHUNK]:
                        pipe.zadd(key, {channel: now})
                        pipe.expire(key, self.group_expiry)
                    await pipe.execute()

    async def group_send_many(self, groups: Sequence[str], message: dict[str, Any]) -> None:
        """``group_send(group, message)`` for each of ``groups``, in two round trips per server."""
        await self.group_sends([(groups, message)])

    async def group_sends(self, sends: Sequence[tuple[Sequence[str], dict[str, Any]]]) -> None:
        """:meth:`group_send_many` of each ``(groups, message)``, all in two round trips per
        server (each group's members read once): every channel gets the messages in the
        order of ``sends``."""
        groups = list(dict.fromkeys(group for send_groups, _ in sends for group in send_groups))
        members = dict(zip(groups, await self._members(groups), strict=True))
        items: dict[int, list[tuple[bytes, bytes, int, float]]] = collections.defaultdict(list)
        now = time.time()
        for position, (send_groups, message) in enumerate(sends):
            score = now + position * ORDER_STEP
            for group in send_groups:
                by_connection, messages, capacities = self._map_channel_keys_to_connection(
                    members[group], message
                )
                for index, keys in by_connection.items():
                    items[index] += [(key, messages[key], capacities[key], score) for key in keys]
        over = await asyncio.gather(*(self._send(index, sent) for index, sent in items.items()))
        if sum(over):
            logger.info(
                "%s of %s channels over capacity in groups %s",
                sum(over),
                sum(len(sent) for sent in items.values()),
                ", ".join(groups),
            )

    async def _members(self, groups: Sequence[str]) -> list[list[str]]:
        """Each group's channels (one script per server)."""
        expired = int(time.time()) - self.group_expiry
        by_connection: dict[int, list[int]] = collections.defaultdict(list)
        for position, group in enumerate(groups):
            assert self.require_valid_group_name(group), "Group name not valid"
            by_connection[self.consistent_hash(group)].append(position)

        async def read(index: int, positions: list[int]) -> list[tuple[int, list[bytes]]]:
            keys = [self._group_key(groups[position]) for position in positions]
            found = await _members_script(keys, [expired], client=self.connection(index))
            return list(zip(positions, found, strict=True))

        found: list[list[str]] = [[] for _ in groups]
        for replies in await asyncio.gather(*(read(i, p) for i, p in by_connection.items())):
            for position, names in replies:
                found[position] = [name.decode("utf8") for name in names]
        return found

    async def _send(self, index: int, items: list[tuple[bytes, bytes, int, float]]) -> int:
        keys, messages, capacities, scores = zip(*items, strict=True)
        expired = int(time.time()) - int(self.expiry)
        args = [*messages, *capacities, *scores, self.expiry, expired]
        return await _send_script(list(keys), args, client=self.connection(index))


class _Failed:
    """Put in the waiting buffers when the pump's take fails: their receives raise it."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error
