"""The channel layer on Redis: a connection pool that waits instead of failing, and one send
of a message to several groups.

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
``__asgi_channel__`` lists), capacity, message and group expiry.
"""

from __future__ import annotations

import asyncio
import collections
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
#: group_sends would). ARGV: the messages, their capacities, then now, the expiry, and the
#: score below which a channel's messages have expired. channels-redis' send script, with
#: its expiry pipeline folded in.
SEND_LUA = b"""
local n = #KEYS
local now = ARGV[2 * n + 1]
local expiry = ARGV[2 * n + 2]
local expired = ARGV[2 * n + 3]
for i = 1, n do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, expired)
end
local over_capacity = 0
for i = 1, n do
    if redis.call('ZCOUNT', KEYS[i], '-inf', '+inf') < tonumber(ARGV[n + i]) then
        redis.call('ZADD', KEYS[i], now, ARGV[i])
        redis.call('EXPIRE', KEYS[i], expiry)
    else
        over_capacity = over_capacity + 1
    end
end
return over_capacity
"""

#: Sent by SHA (EVALSHA), loaded again when the server does not know it (a restart).
_members_script = AsyncScript(None, MEMBERS_LUA)
_send_script = AsyncScript(None, SEND_LUA)


def blocking_pool(url: str, **options: Any) -> BlockingConnectionPool:
    """redis-py's blocking pool for ``url``, which replaces a connection the server closed
    while it sat idle instead of handing it out (``patient_data.redis_pools``)."""
    return BlockingConnectionPool.from_url(url, **redis_pools.checked(options))


class BlockingPoolRedisChannelLayer(RedisChannelLayer):
    """``RedisChannelLayer`` whose hosts (``{"address": url, ...}``) get a blocking pool, with
    :meth:`group_send_many`."""

    def create_pool(self, index: int) -> BlockingConnectionPool:
        host = dict(self.hosts[index])
        return blocking_pool(host.pop("address"), **host)

    async def group_send_many(self, groups: Sequence[str], message: dict[str, Any]) -> None:
        """``group_send(group, message)`` for each of ``groups``, in two round trips per server."""
        members = await self._members(groups)
        sends: dict[int, list[tuple[bytes, bytes, int]]] = collections.defaultdict(list)
        for channel_names in members:
            by_connection, messages, capacities = self._map_channel_keys_to_connection(
                channel_names, message
            )
            for index, keys in by_connection.items():
                sends[index] += [(key, messages[key], capacities[key]) for key in keys]
        over = await asyncio.gather(*(self._send(index, items) for index, items in sends.items()))
        if sum(over):
            logger.info(
                "%s of %s channels over capacity in groups %s",
                sum(over),
                sum(len(names) for names in members),
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

    async def _send(self, index: int, items: list[tuple[bytes, bytes, int]]) -> int:
        keys = [key for key, _, _ in items]
        args = [*(msg for _, msg, _ in items), *(capacity for _, _, capacity in items)]
        now = time.time()
        args += [now, self.expiry, int(now) - int(self.expiry)]
        return await _send_script(keys, args, client=self.connection(index))
