"""Cleanup events for the live monitor: published, value-free, and optional."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from channels.layers import get_channel_layer
from django.test import override_settings

from patient_data import cleanup, patient_session
from patient_data.conf import conf
from patient_data.models import CleanupEvent
from patient_data.sessions.db import SessionStore

pytestmark = pytest.mark.django_db(transaction=True)


def _redis_answers(host: str = "127.0.0.1", port: int = 6379) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


async def _session_with_data() -> SessionStore:
    session = SessionStore()
    await patient_session.astore(session, "patient_summary", {"problems": ["SYNTH-P"]})
    return session


async def _cleared_event() -> dict:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(conf.PATIENT_EVENT_GROUP, channel)
    try:
        items = await cleanup.aclear_patient_session_data(
            await _session_with_data(), reason="manual_cleanup", source="socket"
        )
        assert items == 1
        return await asyncio.wait_for(layer.receive(channel), timeout=5)
    finally:
        await layer.group_discard(conf.PATIENT_EVENT_GROUP, channel)


async def test_cleanups_are_published_without_values():
    message = await _cleared_event()
    assert message["type"] == "patient_session.event"
    event = message["event"]
    assert event["reason"] == "manual_cleanup"
    assert event["source"] == "socket"
    assert event["items_cleared"] == 1
    assert event["keys"] == ["patient_summary"]
    assert "SYNTH" not in repr(message)


@pytest.mark.skipif(not _redis_answers(), reason="no Redis server on 127.0.0.1:6379")
async def test_cleanups_reach_the_monitor_over_real_redis():
    layers = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [{"address": "redis://127.0.0.1:6379/0", "socket_timeout": None}],
                "prefix": f"ncp-test-{time.monotonic_ns()}",
            },
        }
    }
    with override_settings(CHANNEL_LAYERS=layers):
        message = await _cleared_event()
    assert message["event"]["items_cleared"] == 1


async def test_a_dead_redis_degrades_the_live_view_not_the_protection():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    layers = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": f"redis://127.0.0.1:{dead_port}/0"}]},
        }
    }
    with override_settings(CHANNEL_LAYERS=layers, PATIENT_EVENT_PUBLISH_TIMEOUT=0.5):
        session = await _session_with_data()
        started = time.monotonic()
        items = await cleanup.aclear_patient_session_data(session, reason="manual_cleanup")
        elapsed = time.monotonic() - started
    assert items == 1
    assert "patient_summary" not in session
    assert elapsed < 3
    assert await CleanupEvent.objects.filter(reason="manual_cleanup").acount() == 1
