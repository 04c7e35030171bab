"""Every session's events reach the staff sockets of a process through its fan-out listener:
one message per process and event, not one per staff socket (``monitor.fanout``). On whichever
layer is configured (in memory, or Redis with ``REDIS_URL``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from monitor import consumers, fanout, state
from patient_data import events
from patient_data.conf import conf
from patient_data.refs import session_ref
from tests.live_support import (
    members,
    monitor_socket,
    scanned_frames,  # noqa: F401 - fixture
    session_key,
    signed_in,
    staff_user,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("scanned_frames")]


class FakeStaff:
    """What the fan-out needs of a staff socket."""

    def __init__(self, on_event: Callable[[dict], Any] | None = None) -> None:
        self.channel_name, self.groups, self.on_event = "specific.x!1", [], on_event

    async def on_monitor_event(self, message: dict) -> None:
        await self.on_event(message)


def _socket_channels() -> set[str]:
    return {socket.channel_name for socket in fanout._sockets}


async def test_staff_sockets_of_a_process_are_one_member_of_the_monitor_group(clinician):
    before = await members(conf.PATIENT_EVENT_GROUP)  # other processes' listeners, on Redis
    staff = await signed_in(await staff_user(), patient_data=False)
    first, second = await monitor_socket(staff), await monitor_socket(staff)
    joined = await members(conf.PATIENT_EVENT_GROUP) - before
    assert joined == {fanout._channel}
    assert not joined & _socket_channels()
    client = await signed_in(clinician)
    ref = session_ref(session_key(client))
    assert (await client.post("/api/clear-patient-session/")).status_code == 200
    for socket in (first, second):
        cleared = await socket.expect("session.cleared")
        assert (cleared["session"], cleared["items_cleared"]) == (ref, 3)
    await first.close()
    assert await members(conf.PATIENT_EVENT_GROUP) - before == joined  # one is still open
    await second.close()
    assert await members(conf.PATIENT_EVENT_GROUP) - before == set()


async def test_a_new_staff_socket_brings_the_process_back_into_the_group(clinician):
    staff = await signed_in(await staff_user(), patient_data=False)
    await (await monitor_socket(staff)).close()
    again = await monitor_socket(staff)
    assert fanout._channel in await members(conf.PATIENT_EVENT_GROUP)
    client = await signed_in(clinician)
    assert (await client.post("/api/clear-patient-session/")).status_code == 200
    assert (await again.expect("session.cleared"))["session"] == session_ref(session_key(client))
    await again.close()


async def test_events_published_before_the_snapshot_went_out_follow_it_in_order(
    clinician, monkeypatch
):
    """The process is in the group before the snapshot is read, so nothing is missed; what
    comes meanwhile waits for the snapshot, as it waited in the socket's own channel."""
    client = await signed_in(clinician)
    ref = session_ref(session_key(client))
    snapshot = state.asnapshot

    async def snapshot_with_events_meanwhile(**kwargs):
        frame = await snapshot(**kwargs)
        await events.apublish_presence(ref, 1)
        await events.apublish_presence(ref, 2)
        await asyncio.sleep(0.2)  # the listener has them before the snapshot goes out
        return frame

    monkeypatch.setattr(state, "asnapshot", snapshot_with_events_meanwhile)
    staff = await signed_in(await staff_user(), patient_data=False)
    socket = await monitor_socket(staff)  # its first frame is the snapshot
    assert [(await socket.expect("presence.changed"))["open_tabs"] for _ in range(2)] == [1, 2]
    await socket.close()


async def test_a_staff_socket_whose_frame_fails_stops_no_other():
    got = []

    async def fails(message):
        raise RuntimeError("gone")

    async def records(message):
        got.append(message["type"])

    failing, working, waiting = FakeStaff(fails), FakeStaff(records), FakeStaff(records)
    fanout._staff.update({failing: None, working: None, waiting: []})
    try:
        await fanout._handle({"type": events.PRESENCE_TYPE, "event": {}})
        assert got == [events.PRESENCE_TYPE]  # the waiting one holds it
        await fanout.aready(waiting)
        assert got == [events.PRESENCE_TYPE] * 2
        assert fanout._staff[waiting] is None
    finally:
        fanout._staff.clear()


async def test_a_staff_socket_refused_while_the_layer_is_away_is_not_counted_in(monkeypatch):
    async def away(layer):
        raise ConnectionError("Redis away")

    monkeypatch.setattr(fanout, "_opened", away)
    socket = FakeStaff()
    with pytest.raises(ConnectionError):
        await fanout.awatch(socket)
    assert socket not in fanout._staff


async def test_a_staff_socket_closes_when_its_own_session_ends_through_the_fan_out(clinician):
    staff_member = await staff_user()
    staff = await signed_in(staff_member, patient_data=False)
    socket = await monitor_socket(staff)
    own = session_ref(session_key(staff))
    await events.apublish({"session_ref": own, "action": "end_session", "items_cleared": 0})
    assert (await socket.expect("session.ended"))["session"] == own
    assert await socket.closed_with() == consumers.CLOSE_ENDED
