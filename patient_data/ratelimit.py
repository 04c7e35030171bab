"""Rate limits of the cleanup endpoints, per session and per client address.

A fixed window counted in Django's cache (Redis in production, so every process shares the
counters). The limit never stands between a session and the removal of its patient data:
the API view lets a session that holds patient data through whatever the counters say. When
the cache is unreachable the limit is skipped (it protects the server's work, not the data).

With Django's Redis cache every counter of a request is charged in one round trip (a Lua script)
from the event loop (``redis.asyncio``, one client per event loop: its connections belong to that
loop), under the cache's own key names and value format. Django's cache API has no async
Redis client: its ``aadd``/``aincr`` are a thread hop and a round trip (or two) each. Other
cache backends (locmem in the embedded default) keep Django's cache API.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import weakref
from dataclasses import dataclass

from django.core.cache import DEFAULT_CACHE_ALIAS, cache, caches
from django.core.cache.backends.redis import RedisCache
from django.http import HttpRequest
from redis import asyncio as aredis
from redis.commands.core import AsyncScript

from patient_data import redis_pools
from patient_data.conf import conf
from patient_data.refs import address_ref, session_ref

logger = logging.getLogger("patient_data.ratelimit")

#: Options of Django's cache that are not ``redis.asyncio`` connection options.
_SYNC_ONLY_OPTIONS = {"pool_class", "parser_class", "serializer"}

#: Per event loop, per Redis URL and options: the asyncio client (a loop's own connections).
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple, aredis.Redis]] = (
    weakref.WeakKeyDictionary()
)


#: KEYS: the counters; ARGV[1]: their lifetime in seconds. For each, Django's ``add(key, 0)``
#: (the cache stores ints as they are) then ``incr(key)``: the counts, atomically.
CHARGE_LUA = b"""
local counts = {}
for i, key in ipairs(KEYS) do
    redis.call('SET', key, 0, 'EX', ARGV[1], 'NX')
    counts[i] = redis.call('INCR', key)
end
return counts
"""
#: Sent by SHA (EVALSHA), loaded again when the server does not know it (a restart).
_charge_script = AsyncScript(None, CHARGE_LUA)


@dataclass(frozen=True)
class Limit:
    """One counter: a cache key and the most requests it allows per window."""

    key: str
    allowed: int


def limits(request: HttpRequest, endpoint: str) -> list[Limit]:
    """The counters one request to ``endpoint`` is charged to (keyed hashes, never raw keys)."""
    window = int(time.time() // conf.PATIENT_CLEANUP_RATE_WINDOW)
    prefix = f"patient_data:rate:{endpoint}:{window}"
    found = []
    per_session = conf.PATIENT_CLEANUP_RATE_PER_SESSION
    session_key = request.session.session_key
    if session_key and per_session:
        found.append(Limit(f"{prefix}:s:{session_ref(session_key)}", per_session))
    per_address = conf.PATIENT_CLEANUP_RATE_PER_ADDRESS
    if per_address:
        address = request.META.get("REMOTE_ADDR") or "unknown"
        found.append(Limit(f"{prefix}:a:{address_ref(address)}", per_address))
    return found


def retry_after() -> int:
    """Whole seconds until the current window ends."""
    window = conf.PATIENT_CLEANUP_RATE_WINDOW
    return max(1, math.ceil(window - time.time() % window))


def redis_client(backend: RedisCache) -> aredis.Redis:
    """This event loop's asyncio client of the Redis server ``backend`` writes to."""
    url = backend._servers[0]  # Django's RedisCache writes to the first server
    options = {k: v for k, v in backend._options.items() if k not in _SYNC_ONLY_OPTIONS}
    key = (url, tuple(sorted((name, repr(value)) for name, value in options.items())))
    clients = _clients.setdefault(asyncio.get_running_loop(), {})
    client = clients.get(key)
    if client is None:
        client = clients[key] = aredis.Redis.from_url(url, **redis_pools.checked(options))
    return client


async def _acharge_redis(backend: RedisCache, found: list[Limit]) -> list[int]:
    """``add(key, 0)`` then ``incr(key)`` for every counter, in one script (one round trip)."""
    timeout = backend.get_backend_timeout(conf.PATIENT_CLEANUP_RATE_WINDOW + 1)
    keys = [backend.make_and_validate_key(limit.key) for limit in found]
    return await _charge_script(keys, [timeout], client=redis_client(backend))


async def _acharge_cache(found: list[Limit]) -> list[int]:
    counts = []
    for limit in found:
        await cache.aadd(limit.key, 0, timeout=conf.PATIENT_CLEANUP_RATE_WINDOW + 1)
        counts.append(await cache.aincr(limit.key))
    return counts


async def aexceeded(request: HttpRequest, endpoint: str) -> bool:
    """Charge this request to its counters; True when one of them is over its limit."""
    found = limits(request, endpoint)
    if not found:
        return False
    backend = caches[DEFAULT_CACHE_ALIAS]
    try:
        if isinstance(backend, RedisCache):
            counts = await _acharge_redis(backend, found)
        else:
            counts = await _acharge_cache(found)
    except Exception as exc:  # noqa: BLE001 - any cache failure: serve, never refuse a cleanup
        logger.warning("Cleanup rate limit skipped: cache unavailable (%s).", type(exc).__name__)
        return False
    return any(count > limit.allowed for count, limit in zip(counts, found, strict=True))
