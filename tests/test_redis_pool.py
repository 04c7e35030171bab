"""The Redis cache shares one connection pool per process, whatever the thread or request."""

from __future__ import annotations

import threading

import pytest
from django.core.cache.backends.redis import RedisCache

from ncp_asgi.redis_pool import SharedConnectionPool

URL = "redis://127.0.0.1:6379/15"
OPTIONS = {"socket_timeout": 5, "pool_class": "ncp_asgi.redis_pool.SharedConnectionPool"}


def _pool_of(cache: RedisCache):
    return cache._cache._get_connection_pool(write=True)


def test_cache_objects_of_every_thread_share_one_pool():
    pools = []

    def request() -> None:  # Django builds a cache object per thread / async context
        pools.append(_pool_of(RedisCache(URL, {"OPTIONS": dict(OPTIONS)})))

    threads = [threading.Thread(target=request) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(pool) for pool in pools}) == 1
    assert isinstance(pools[0], SharedConnectionPool)


def test_other_servers_or_options_get_their_own_pool():
    first = SharedConnectionPool.from_url(URL, socket_timeout=5)
    assert SharedConnectionPool.from_url(URL, socket_timeout=5) is first
    assert SharedConnectionPool.from_url(URL, socket_timeout=1) is not first
    assert SharedConnectionPool.from_url("redis://127.0.0.1:6379/14", socket_timeout=5) is not first


@pytest.mark.django_db
def test_the_project_cache_uses_it_with_redis(settings):
    if "redis" not in settings.CACHES["default"]["BACKEND"].lower():
        pytest.skip("needs REDIS_URL")
    assert settings.CACHES["default"]["OPTIONS"]["pool_class"].endswith("SharedConnectionPool")
