"""The cleanup rate limit's counters: on Django's Redis cache, charged from the event loop in
one round trip, in the cache's own keys and format; on other caches, Django's cache API."""

from __future__ import annotations

import asyncio
import secrets

import pytest
from django.conf import settings
from django.core.cache import cache, caches
from django.test import RequestFactory, override_settings
from redis import asyncio as aredis

from patient_data import ratelimit
from tests.redis_server import OwnRedis

WINDOW = 600


def _request(address: str | None = None):
    request = RequestFactory().post("/api/clear-patient-session/")
    request.META["REMOTE_ADDR"] = address or f"2001:db8::{secrets.token_hex(2)}"
    request.session = type("S", (), {"session_key": secrets.token_hex(16)})()
    return request


def _redis_cache() -> dict:
    if not settings.REDIS_URL:
        pytest.skip("REDIS_URL not set: no Redis cache")
    return {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": settings.REDIS_URL,
            "KEY_PREFIX": f"ratelimit-test-{secrets.token_hex(3)}",
            "OPTIONS": {"socket_timeout": 5},
        }
    }


LIMITS = {
    "PATIENT_CLEANUP_RATE_PER_SESSION": 2,
    "PATIENT_CLEANUP_RATE_PER_ADDRESS": 3,
    "PATIENT_CLEANUP_RATE_WINDOW": WINDOW,
}


async def _charges(request, times: int) -> list[bool]:
    return [await ratelimit.aexceeded(request, "clear") for _ in range(times)]


@pytest.fixture(params=["redis", "locmem"])
def backend(request):
    caches_setting = (
        _redis_cache()
        if request.param == "redis"
        else {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    )
    with override_settings(CACHES=caches_setting, **LIMITS):
        yield request.param


async def test_a_session_is_over_its_limit_after_its_allowance(backend):
    request = _request()
    assert await _charges(request, 3) == [False, False, True]
    # Another session at another address starts from zero.
    assert await _charges(_request(), 1) == [False]


async def test_an_address_is_over_its_limit_whatever_the_session(backend):
    address = f"2001:db8::{secrets.token_hex(2)}"
    assert [await ratelimit.aexceeded(_request(address), "clear") for _ in range(4)] == [
        False, False, False, True,
    ]  # fmt: skip


async def test_the_counters_are_the_cache_s_own_keys_and_values(backend):
    """Whoever reads the counters through Django's cache sees the same numbers, with the
    fixed window's lifetime (a window and a second)."""
    request = _request()
    await _charges(request, 2)
    limits = ratelimit.limits(request, "clear")
    assert [await cache.aget(limit.key) for limit in limits] == [2, 2]
    if backend == "redis":
        key = caches["default"].make_key(limits[0].key)
        client = aredis.Redis.from_url(settings.REDIS_URL)
        try:
            assert WINDOW - 5 <= await client.ttl(key) <= WINDOW + 1
        finally:
            await client.aclose()


async def test_redis_counters_are_charged_in_the_loop_in_one_round_trip(hops, monkeypatch):
    with override_settings(CACHES=_redis_cache(), **LIMITS):
        request = _request()
        await ratelimit.aexceeded(request, "clear")  # connects, loads the script
        sent: list[str] = []
        original = aredis.Redis.execute_command

        async def counting(self, *args, **kwargs):
            sent.append(str(args[0]))
            return await original(self, *args, **kwargs)

        monkeypatch.setattr(aredis.Redis, "execute_command", counting)
        hops.clear()
        assert not await ratelimit.aexceeded(request, "clear")
    assert hops == []
    assert sent == ["EVALSHA"]  # both counters, add and incr each


async def test_a_server_that_does_not_know_the_script_is_sent_it(monkeypatch):
    """A restarted Redis has forgotten the script: it is loaded again (a SHA it never saw
    stands for that here; SCRIPT FLUSH would empty every user's script cache)."""
    with override_settings(CACHES=_redis_cache(), **LIMITS):
        request = _request()
        monkeypatch.setattr(ratelimit._charge_script, "sha", "0" * 40)
        assert await _charges(request, 3) == [False, False, True]


def test_each_event_loop_has_its_own_redis_client():
    """Connections belong to the loop that opened them (tests run a loop each)."""
    with override_settings(CACHES=_redis_cache()):

        async def client():
            first = ratelimit.redis_client(caches["default"])
            assert ratelimit.redis_client(caches["default"]) is first
            await first.ping()
            return first

        assert asyncio.run(client()) is not asyncio.run(client())


async def test_the_counters_go_on_after_a_redis_restart(tmp_path, caplog):
    """Connections idle in the client's pool through a restart are replaced, not handed out
    dead (patient_data.redis_pools): the first request after the restart is counted, not
    let through with the fail-open warning."""
    own_redis = OwnRedis(tmp_path)
    own_redis.start()
    caches_setting = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": own_redis.url,
            "OPTIONS": {"socket_timeout": 5},
        }
    }
    try:
        with override_settings(CACHES=caches_setting, **LIMITS):
            request = _request()
            await asyncio.gather(*(ratelimit.aexceeded(request, "clear") for _ in range(2)))
            own_redis.stop()
            await asyncio.sleep(0.5)  # away for a while: the event loop sees them closed
            own_redis.start()
            caplog.clear()
            assert await _charges(request, 3) == [False, False, True]
            assert not [r for r in caplog.records if r.levelname == "WARNING"]
    finally:
        own_redis.stop()
