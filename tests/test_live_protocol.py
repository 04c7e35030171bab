"""Bad frames get a JSON error and harm nothing; floods are limited, then closed."""

from __future__ import annotations

import json

import pytest
from django.test import override_settings

from monitor import protocol
from patient_data import cleanup
from tests.live_support import (
    monitor_socket,
    scanned_frames,  # noqa: F401 - fixture
    session_socket,
    signed_in,
    staff_user,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("scanned_frames")]

BAD_FRAMES = [
    ("{not json", "bad_json", None),
    ("[1, 2]", "bad_json", None),
    (b"\x00\x01", "binary_not_supported", None),
    (json.dumps({"type": "status", "pad": "x" * 5000}), "too_large", None),
    (json.dumps({"type": "launch", "id": 3}), "unknown_type", 3),
    (json.dumps({"type": "end_session", "id": 4}), "unknown_type", 4),
    (json.dumps({"id": 5}), "bad_field", 5),
    (json.dumps({"type": 42}), "bad_field", None),
    (json.dumps({"type": "status", "id": True}), "bad_field", None),
    (json.dumps({"type": "status", "id": "x" * 65}), "bad_field", None),
    (json.dumps({"type": "status", "session": "0" * 32}), "bad_field", None),
    (json.dumps({"type": "cleanup", "session": "not-a-ref", "id": "c"}), "bad_field", "c"),
]


@pytest.mark.parametrize(("sent", "code", "echoed"), BAD_FRAMES)
async def test_a_bad_frame_gets_an_error_and_the_socket_keeps_working(
    clinician, sent, code, echoed
):
    client = await signed_in(clinician)
    socket = await session_socket(client)
    await socket.send(sent)
    error = await socket.expect("error")
    assert (error["error"], error["id"]) == (code, echoed)
    assert error["message"] == protocol.ERRORS[code]
    await socket.send({"type": "status", "id": "after"})
    state = await socket.expect("session.state")
    assert (state["id"], state["items"]) == ("after", 3)
    await socket.close()


async def test_the_staff_socket_needs_a_session_for_acting_commands(clinician):
    monitor = await monitor_socket(await signed_in(await staff_user(), patient_data=False))
    await monitor.send({"type": "cleanup", "id": 1})
    assert (await monitor.expect("error"))["error"] == "bad_field"
    await monitor.send({"type": "emergency_cleanup"})
    assert (await monitor.expect("error"))["error"] == "unknown_type"
    await monitor.close()


@override_settings(PATIENT_SOCKET_RATE_LIMIT=(3, 60))
async def test_a_flood_is_rate_limited_then_closed_without_touching_another_tab(clinician):
    client = await signed_in(clinician)
    flooder, other = await session_socket(client), await session_socket(client)
    for _ in range(3):
        await flooder.send({"type": "status"})
        await flooder.expect("session.state")
    await flooder.send({"type": "status"})
    assert (await flooder.expect("error"))["error"] == "rate_limited"
    for _ in range(3):
        await flooder.send({"type": "status"})
    assert await flooder.closed_with() == 4008
    await other.send({"type": "status", "id": "ok"})
    assert (await other.expect("session.state"))["id"] == "ok"
    await other.close()


@override_settings(PATIENT_SOCKET_RATE_LIMIT=(4, 60))
async def test_a_client_sending_only_garbage_is_closed(clinician):
    socket = await session_socket(await signed_in(clinician))
    for _ in range(2):
        await socket.send("garbage")
        assert (await socket.expect("error"))["error"] == "bad_json"
    await socket.send("garbage")
    assert await socket.closed_with() == 4008


def test_the_rate_limit_window_starts_again():
    limit = protocol.RateLimit(2, 10)
    assert [limit.hit(0.0), limit.hit(1.0), limit.hit(2.0)] == ["ok", "ok", "limited"]
    assert [limit.hit(3.0), limit.hit(4.0)] == ["limited", "violation"]
    assert limit.hit(10.5) == "ok"


async def test_a_failing_command_answers_failed_without_internals(clinician, monkeypatch):
    async def broken(*args, **kwargs):
        raise RuntimeError("SYNTH-secret internals")

    monkeypatch.setattr(cleanup, "aclear_patient_session_data", broken)
    socket = await session_socket(await signed_in(clinician))
    await socket.send({"type": "cleanup", "id": "f"})
    error = await socket.expect("error")
    assert (error["error"], error["id"]) == ("failed", "f")
    await socket.send({"type": "status"})
    assert (await socket.expect("session.state"))["items"] == 3
    await socket.close()
