"""``cache`` sessions in Django's Redis cache: SCAN over the session key prefix.

Every write is a small Lua compare-and-set on the server: the new content replaces the old
only if the stored bytes are still the ones read, and ``KEEPTTL`` keeps the remaining lifetime.
Other caches (local memory, memcached, database, file) cannot be enumerated from a command.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache

from patient_data.bulk.backends.base import Backend, Stored, UnsupportedBackend

COMPARE_AND_SET = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == 'del' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[3], 'KEEPTTL')
end
return 1
"""


def _glob_escape(text: str) -> str:
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


class RedisCacheBackend(Backend):
    name = "cache"

    def __init__(self, engine: str, store_class: type) -> None:
        super().__init__(engine, store_class)
        alias = settings.SESSION_CACHE_ALIAS
        cache = caches[alias]
        if not isinstance(cache, RedisCache):
            raise UnsupportedBackend(
                f"SESSION_ENGINE {engine!r} keeps sessions in cache {alias!r} "
                f"({type(cache).__module__}.{type(cache).__name__}), which a command cannot "
                "enumerate (a local-memory cache lives inside each server process). Way out: "
                "use django.core.cache.backends.redis.RedisCache for SESSION_CACHE_ALIAS, or "
                "sessions in the database (patient_data.sessions.db / cached_db); "
                "`manage.py startup_cleanup_patient_sessions` advances the patient-data epoch, "
                "which voids patient data in every session at its next request."
            )
        self.cache = cache
        self.prefix = cache.make_key(store_class.cache_key_prefix)
        if cache.make_key(store_class.cache_key_prefix + "probe") != self.prefix + "probe":
            raise UnsupportedBackend(
                f"Cache {alias!r} uses a KEY_FUNCTION that does not keep the session key as a "
                "suffix, so its session keys cannot be found by prefix. Way out: use the "
                "default KEY_FUNCTION for the session cache."
            )
        self.client = cache._cache.get_client(write=True)
        self.serializer = cache._cache._serializer
        self._compare_and_set = self.client.register_script(COMPARE_AND_SET)

    def describe(self) -> str:
        return f"{super().describe()}, Redis cache {settings.SESSION_CACHE_ALIAS!r}"

    def _session_key(self, cache_key: bytes) -> str:
        return cache_key.decode()[len(self.prefix) :]

    def pages(self, size: int) -> Iterator[list[Stored]]:
        pattern = _glob_escape(self.prefix) + "*"
        cursor = 0
        while True:
            cursor, found = self.client.scan(cursor, match=pattern, count=size)
            keys = sorted({self._session_key(key) for key in found})
            if keys:
                yield list(self.fetch(keys).values())
            if cursor == 0:
                return

    def fetch(self, keys: list[str]) -> dict[str, Stored]:
        values = self.client.mget([self.prefix + key for key in keys]) if keys else []
        return {
            key: Stored(key, raw) for key, raw in zip(keys, values, strict=True) if raw is not None
        }

    def loads(self, raw: bytes) -> Any:
        return self.serializer.loads(raw)

    def encode(self, data: dict) -> bytes:
        return self.serializer.dumps(data)

    def apply(self, updates: list[tuple[Stored, dict]], deletes: list[Stored]) -> set[str]:
        pipe = self.client.pipeline(transaction=False)
        order = []
        for stored, data in updates:
            args = [stored.raw, "set", self.encode(data)]
            self._compare_and_set(keys=[self.prefix + stored.key], args=args, client=pipe)
            order.append(stored.key)
        for stored in deletes:
            args = [stored.raw, "del", b""]
            self._compare_and_set(keys=[self.prefix + stored.key], args=args, client=pipe)
            order.append(stored.key)
        results = pipe.execute() if order else []
        return {key for key, done in zip(order, results, strict=True) if not done}
