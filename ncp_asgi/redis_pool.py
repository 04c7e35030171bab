"""One Redis connection pool per process for Django's Redis cache.

Django keeps a cache object per thread and per async context, and under ASGI every request
runs in a context (and thread) of its own: each request then built a new ``RedisCacheClient``,
hence a new pool, and opened (and left for the garbage collector) a new Redis connection for
its first cache call: the cleanup API's rate limit alone paid a TCP connect and the client
handshake per request. With this pool class every cache object of the process shares one
thread-safe pool per server URL and options; redis-py resets it in a forked child.
"""

from __future__ import annotations

import threading
from typing import Any

import redis


class SharedConnectionPool(redis.ConnectionPool):
    """``pool_class`` for ``django.core.cache.backends.redis.RedisCache`` (its OPTIONS)."""

    _shared: dict[tuple, SharedConnectionPool] = {}
    _lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> SharedConnectionPool:
        key = (url, tuple(sorted((name, repr(value)) for name, value in kwargs.items())))
        with cls._lock:
            pool = cls._shared.get(key)
            if pool is None:
                pool = cls._shared[key] = super().from_url(url, **kwargs)
        return pool
