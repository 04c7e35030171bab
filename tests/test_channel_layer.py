"""The channel layer as configured from REDIS_URL survives idle sockets (TRAPS.md:
channels-redis 4.3 + redis-py 8 tear consumers down after 5 s idle unless socket_timeout is
lifted; django/channels_redis#422)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers
from channels_redis.core import RedisChannelLayer
from django.conf import settings
from django.utils.module_loading import import_string

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
