"""The sockets: who may connect, what a page sees, what its commands do."""

from __future__ import annotations

import time

import pytest
from autobahn.exception import Disconnected
from django.contrib.auth import get_user_model
from django.test import override_settings

from monitor import consumers, presence, timers
from patient_data import events
from patient_data.conf import conf
from patient_data.models import CleanupEvent
from patient_data.refs import session_ref
from tests.live_support import (
    SESSION_KEYS,
    Socket,
    members,
    monitor_socket,
    rewrite,
    scan,
    scanned_frames,  # noqa: F401 - fixture
    session_key,
    session_socket,
    signed_in,
    staff_user,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("scanned_frames")]


async def test_a_socket_without_a_session_is_refused():
    assert not await Socket("/ws/patient-session/").connect()


async def test_a_socket_from_another_origin_is_refused(clinician):
    client = await signed_in(clinician)
    socket = Socket("/ws/patient-session/", session_key(client), origin="https://evil.example")
    assert not await socket.connect()


async def test_a_socket_of_an_inactive_user_is_refused(clinician):
    client = await signed_in(clinician)
    await get_user_model().objects.filter(pk=clinician.pk).aupdate(is_active=False)
    assert not await Socket("/ws/patient-session/", session_key(client)).connect()


async def test_the_page_first_gets_its_session_state_without_values(clinician):
    client = await signed_in(clinician)
    socket = Socket("/ws/patient-session/", session_key(client))
    assert await socket.connect()
    state = await socket.expect("session.state")
    assert state["v"] == 1
    assert state["session"] == session_ref(session_key(client))
    assert state["has_patient_data"] is True
    assert state["items"] == 3
    assert state["keys"] == ["current_patient_id", "patient_cda_*", "patient_summary"]
    assert state["open_tabs"] == 1
    assert 0 < state["idle_seconds_left"] <= state["timeout_seconds"]
    assert state["absolute_seconds_left"] > 0 and state["session_seconds_left"] > 0
    assert (state["warning_seconds"], state["hidden_timeout_seconds"]) == (60, 0)
    await socket.close()


async def test_a_session_without_patient_data_has_no_countdowns(clinician):
    client = await signed_in(clinician, patient_data=False)
    await client.get("/_test/plain/")  # activity: the max-inactive clock starts
    socket = Socket("/ws/patient-session/", session_key(client))
    assert await socket.connect()
    state = await socket.expect("session.state")
    assert state["items"] == 0 and state["idle_seconds_left"] is None
    assert state["absolute_seconds_left"] is None and state["session_seconds_left"] > 0
    await socket.close()


async def test_a_second_tab_is_counted_and_announced(clinician):
    client = await signed_in(clinician)
    first = await session_socket(client)
    second = Socket("/ws/patient-session/", session_key(client))
    assert await second.connect()
    assert (await second.expect("session.state"))["open_tabs"] == 2
    while (await first.expect("presence.changed"))["open_tabs"] != 2:
        pass  # its own join (1) comes first
    await second.close()
    assert (await first.expect("presence.changed"))["open_tabs"] == 1
    await first.close()


async def test_status_is_answered_with_the_state_and_its_id(clinician):
    socket = await session_socket(await signed_in(clinician))
    await socket.send({"type": "status", "id": "s-1"})
    state = await socket.expect("session.state")
    assert state["id"] == "s-1" and state["items"] == 3
    await socket.close()


async def test_cleanup_over_the_socket_reaches_every_tab_and_is_audited(clinician):
    client = await signed_in(clinician)
    first, second = await session_socket(client), await session_socket(client)
    await first.send({"type": "cleanup", "id": 7})
    reply = await first.expect("reply")
    assert reply == {"v": 1, "type": "reply", "id": 7, "command": "cleanup", "ok": True,
                     "items_cleared": 3}  # fmt: skip
    cleared = await second.expect("session.cleared")
    assert (cleared["reason"], cleared["source"], cleared["items_cleared"]) == (
        "manual_cleanup", "socket", 3
    )  # fmt: skip
    assert (await first.expect("session.cleared"))["keys"] == cleared["keys"]
    event = await CleanupEvent.objects.aget()
    assert (event.source, event.actor_id) == ("socket", clinician.pk)
    assert "patient_summary" not in await client.session.aload()
    await first.close()
    await second.close()


async def test_emergency_cleanup_ends_the_session_and_closes_every_tab(clinician):
    client = await signed_in(clinician)
    first, second = await session_socket(client), await session_socket(client)
    await first.send({"type": "emergency_cleanup"})
    assert (await first.expect("reply"))["items_cleared"] == 3
    for socket in (first, second):
        ended = await socket.expect("session.ended")
        assert ended["reason"] == "emergency_cleanup"
        assert await socket.closed_with() == 4001
    assert (await client.get("/_test/whoami/")).json() == {"authenticated": False}


async def test_activity_is_recorded_once_per_interval_and_announced(clinician):
    client = await signed_in(clinician)
    await rewrite(client, seen=time.time() - 60)
    first, second = await session_socket(client), await session_socket(client)
    await first.send({"type": "activity", "id": "a"})
    assert (await first.expect("reply"))["recorded"] is True
    activity = await second.expect("session.activity")
    assert activity["idle_seconds_left"] > 0 and activity["items"] == 3
    await first.send({"type": "activity", "id": "b"})
    assert (await first.expect("reply"))["recorded"] is False
    await first.close()
    await second.close()


async def test_a_signed_out_session_closes_its_socket_as_signed_out(clinician):
    client = await signed_in(clinician)
    socket = await session_socket(client)
    store = client.session
    await store.adelete()
    await socket.send({"type": "status"})
    assert await socket.closed_with() == 4003


async def test_acting_on_another_session_from_a_page_is_refused_and_audited(clinician):
    client = await signed_in(clinician)
    other = await signed_in(await get_user_model().objects.acreate(username="other"))
    socket = await session_socket(client)
    target = session_ref(session_key(other))
    await socket.send({"type": "cleanup", "session": target, "id": 1})
    error = await socket.expect("error")
    assert (error["error"], error["id"]) == ("forbidden", 1)
    refusal = await CleanupEvent.objects.aget()
    assert (refusal.reason, refusal.actor_id, refusal.session_ref) == (
        "forbidden", clinician.pk, target
    )  # fmt: skip
    assert "patient_summary" in await other.session.aload()
    await socket.send({"type": "status"})
    assert (await socket.expect("session.state"))["items"] == 3
    await socket.close()


async def test_the_monitor_refuses_a_clinician(clinician):
    client = await signed_in(clinician)
    assert not await Socket("/ws/monitor/", session_key(client)).connect()


async def test_the_monitor_snapshot_lists_sessions_holding_patient_data(clinician):
    client = await signed_in(clinician)
    page = await session_socket(client)
    staff = await signed_in(await staff_user(), patient_data=False)
    socket = Socket("/ws/monitor/", session_key(staff))
    assert await socket.connect()
    snapshot = await socket.expect("sessions.snapshot")
    [row] = snapshot["sessions"]
    assert row["session"] == session_ref(session_key(client))
    assert (row["user"], row["items"], row["open_tabs"]) == ("clinician", 3, 1)
    assert row["keys"] == ["current_patient_id", "patient_cda_*", "patient_summary"]
    assert row["last_activity"] > 0 and row["idle_seconds_left"] > 0
    await socket.send({"type": "status", "id": "x"})
    assert (await socket.expect("sessions.snapshot"))["id"] == "x"
    await page.close()
    await socket.close()


async def test_staff_end_a_session_and_every_tab_closes(clinician):
    client = await signed_in(clinician)
    page = await session_socket(client)
    staff = await staff_user()
    monitor = await monitor_socket(await signed_in(staff, patient_data=False))
    await monitor.send({"type": "end_session", "session": session_ref(session_key(client))})
    seen = await monitor.expect_each("reply", "session.ended")
    assert seen["reply"]["items_cleared"] == 3
    ended = await page.expect("session.ended")
    assert (ended["reason"], ended["source"]) == ("staff_end_session", "staff")
    assert await page.closed_with() == 4001
    assert seen["session.ended"]["session"] == ended["session"]
    event = await CleanupEvent.objects.aget()
    assert event.actor_id == staff.pk
    await monitor.close()


async def test_staff_without_the_cleanup_permission_are_refused_and_keep_the_socket(clinician):
    client = await signed_in(clinician)
    staff = await staff_user(act=False)
    monitor = await monitor_socket(await signed_in(staff, patient_data=False))
    target = session_ref(session_key(client))
    await monitor.send({"type": "cleanup", "session": target})
    assert (await monitor.expect("error"))["error"] == "forbidden"
    refusal = await CleanupEvent.objects.aget()
    assert (refusal.actor_id, refusal.source, refusal.reason) == (staff.pk, "staff", "forbidden")
    await monitor.send({"type": "status"})
    assert (await monitor.expect("sessions.snapshot"))["sessions"][0]["session"] == target
    await monitor.close()


async def test_staff_acting_on_an_unknown_session_get_an_error(clinician):
    monitor = await monitor_socket(await signed_in(await staff_user(), patient_data=False))
    await monitor.send({"type": "cleanup", "session": "0" * 32, "id": "u"})
    error = await monitor.expect("error")
    assert (error["error"], error["id"]) == ("no_such_session", "u")
    await monitor.close()


async def test_the_monitor_follows_activity_and_tabs_of_every_session(clinician):
    client = await signed_in(clinician)
    monitor = await monitor_socket(await signed_in(await staff_user(), patient_data=False))
    page = await session_socket(client)
    ref = session_ref(session_key(client))
    assert (await monitor.expect("presence.changed")) == {
        "v": 1, "type": "presence.changed", "session": ref, "open_tabs": 1
    }  # fmt: skip
    await rewrite(client, seen=time.time() - 60)
    await client.get("/_test/marked/")
    activity = await monitor.expect("session.activity")
    assert activity["session"] == ref and activity["idle_seconds_left"] > 0
    assert activity["items"] == 3  # the dashboard lists it; it holds data
    await page.close()
    assert (await monitor.expect("presence.changed"))["open_tabs"] == 0
    await monitor.close()


def test_the_frame_scan_catches_a_patient_value_and_a_session_key():
    SESSION_KEYS.add("k" * 32)
    with pytest.raises(AssertionError):
        scan('{"v": 1, "note": "SYN-XX-000001"}')
    with pytest.raises(AssertionError):
        scan('{"v": 1, "session": "' + "k" * 32 + '"}')
    SESSION_KEYS.discard("k" * 32)
    scan('{"v": 1, "keys": ["patient_cda_*"]}')


@override_settings(CHANNEL_LAYERS={"default": {"BACKEND": "tests.live_support.LayerGoneAway"}})
async def test_a_channel_layer_failure_closes_the_socket_and_leaves_nothing_behind(clinician):
    client = await signed_in(clinician)
    ref = session_ref(session_key(client))
    socket = await session_socket(client)
    assert timers.sockets_of(ref)
    assert await socket.closed_with() == 1011
    assert timers.sockets_of(ref) == set()
    assert await presence.acount(ref) == 0


@override_settings(CHANNEL_LAYERS={"default": {"BACKEND": "tests.live_support.LayerDown"}})
async def test_with_the_channel_layer_down_the_handshake_is_refused_not_failed(clinician):
    client = await signed_in(clinician)
    socket = Socket("/ws/patient-session/", session_key(client))
    connected, code = await socket.communicator.connect(timeout=5)
    assert (connected, code) == (False, 1011)
    assert timers.sockets_of(session_ref(session_key(client))) == set()


async def _send_fails(monkeypatch, error: Exception) -> None:
    async def failing(self, text_data=None, bytes_data=None, close=False):
        raise error

    monkeypatch.setattr(consumers._LiveSocket, "send", failing)


async def test_a_frame_to_a_page_closed_meanwhile_leaves_its_groups_at_the_close(
    clinician, monkeypatch, caplog
):
    # A mass close: the browser has gone, daphne refuses the frame (autobahn's Disconnected),
    # and the socket's disconnect is on its way. The socket must take that usual way out
    # (leaving its groups), not end by a failure that skips it.
    staff = await signed_in(await staff_user())
    client = await signed_in(clinician)
    key = session_key(client)
    groups = (events.session_group(session_ref(key)), conf.PATIENT_EVENT_GROUP)
    earlier = [await members(group) for group in groups]  # other tests' monitors on Redis
    page, monitor = await session_socket(client), await monitor_socket(staff)
    joined = [await members(group) - before for group, before in zip(groups, earlier, strict=True)]
    assert all(len(channels) == 1 for channels in joined)
    for socket in (page, monitor):  # what the connects announced
        while not await socket.nothing(0.2):
            await socket.next()
    await _send_fails(monkeypatch, Disconnected("Attempt to send on a closed protocol"))
    await events.apublish_activity(key, time.time())
    assert await page.nothing(0.3) and await monitor.nothing(0.1)
    await page.close()
    await monitor.close()
    assert [await members(group) & mine for group, mine in zip(groups, joined, strict=True)] == [
        set(),
        set(),
    ]
    assert "Socket ended by a failure" not in caplog.text


async def test_a_socket_ended_by_a_failure_leaves_its_groups(clinician, monkeypatch):
    client = await signed_in(clinician)
    key = session_key(client)
    page = await session_socket(client)
    group = events.session_group(session_ref(key))
    assert await members(group)
    await _send_fails(monkeypatch, RuntimeError("the server failed"))
    await events.apublish_activity(key, time.time())
    assert await page.closed_with() == 1011
    assert await members(group) == set()
