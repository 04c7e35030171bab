"""The live side's settings: defaults, and one test per check id (E030-E034, W030)."""

from __future__ import annotations

import pytest
from django.test import override_settings

from patient_data import checks
from patient_data.conf import conf

IN_MEMORY = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
REDIS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {}}}


def _ids(messages) -> list[str]:
    return [message.id for message in messages]


def test_the_live_defaults():
    assert conf.PATIENT_TIMEOUT_WARNING == 60
    assert conf.PATIENT_DISCONNECT_GRACE == 10
    assert conf.PATIENT_PRESENCE_HEARTBEAT == 5
    assert conf.PATIENT_SOCKET_RATE_LIMIT == (20, 10)
    assert checks.check_live() == []
    assert checks.check_channel_layer() == []


@pytest.mark.parametrize("value", [-1, "60", None, True])
def test_the_warning_must_be_a_number_of_seconds(value):
    with override_settings(PATIENT_TIMEOUT_WARNING=value):
        assert _ids(checks.check_live()) == ["patient_data.E030"]


def test_a_warning_longer_than_the_timeout_is_refused():
    with override_settings(PATIENT_TIMEOUT_WARNING=1800, PATIENT_SESSION_TIMEOUT=30):
        assert _ids(checks.check_live()) == ["patient_data.E031"]


@pytest.mark.parametrize(
    ("name", "check_id"),
    [
        ("PATIENT_DISCONNECT_GRACE", "patient_data.E032"),
        ("PATIENT_PRESENCE_HEARTBEAT", "patient_data.E033"),
    ],
)
@pytest.mark.parametrize("value", [0, -5, "10", None])
def test_grace_and_heartbeat_must_be_positive(name, check_id, value):
    with override_settings(**{name: value}):
        assert _ids(checks.check_live()) == [check_id]


@pytest.mark.parametrize("value", [20, (0, 10), (20, 0), ("20", 10), (20,), None, (2.5, 10)])
def test_the_rate_limit_must_be_frames_per_seconds(value):
    with override_settings(PATIENT_SOCKET_RATE_LIMIT=value):
        assert _ids(checks.check_live()) == ["patient_data.E034"]


def test_several_workers_on_the_in_memory_layer_warn():
    with override_settings(NCP_WORKERS=4, CHANNEL_LAYERS=IN_MEMORY):
        assert _ids(checks.check_channel_layer()) == ["patient_data.W030"]
    with override_settings(NCP_WORKERS=4, CHANNEL_LAYERS=REDIS):
        assert checks.check_channel_layer() == []
    with override_settings(NCP_WORKERS=1, CHANNEL_LAYERS=IN_MEMORY):
        assert checks.check_channel_layer() == []
