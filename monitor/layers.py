"""The channel layer on Redis, with a connection pool that waits instead of failing.

channels-redis builds redis-py's plain pool, which raises ``MaxConnectionsError`` as soon as
its connections are all in use: a thousand sockets closing at once (each leaving its groups
and announcing its open tabs) then lose group discards and events (TRAPS.md). A blocking pool
makes the burst queue for a connection (``max_connections``, waiting up to ``timeout`` s).
"""

from __future__ import annotations

from channels_redis.core import RedisChannelLayer
from redis.asyncio import BlockingConnectionPool


class BlockingPoolRedisChannelLayer(RedisChannelLayer):
    """``RedisChannelLayer`` whose hosts (``{"address": url, ...}``) get a blocking pool."""

    def create_pool(self, index: int) -> BlockingConnectionPool:
        host = dict(self.hosts[index])
        return BlockingConnectionPool.from_url(host.pop("address"), **host)
