"""Several events in one send (``events.together``, ``monitor.layers`` ``group_sends``): the
events of one block go out together, in their order, in two Redis round trips instead of two
each; an HTTP cleanup's click rides in its ``session.cleared`` (one frame per socket, not two)."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers, get_channel_layer
from django.conf import settings

from monitor import layers
from patient_data import events
from patient_data.conf import conf
from tests import live_support as live
from tests.live_support import scanned_frames  # noqa: F401 - fixture

on_redis = pytest.mark.skipif(
    not settings.REDIS_URL, reason="REDIS_URL not set: the in-memory layer is in use"
)


@pytest.fixture
async def layer():
    """A new layer of the configured backend, in this test's event loop."""
    layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
    yield layer
    if hasattr(layer, "close_pools"):
        await layer.close_pools()


@pytest.fixture
def scripts(monkeypatch) -> list[str]:
    """The channel layer's Redis scripts run (each one round trip to its server)."""
    calls: list[str] = []
    for name in ("_members_script", "_send_script"):
        script = getattr(layers, name)

        async def counted(*args, _script=script, _name=name, **kwargs):
            calls.append(_name)
            return await _script(*args, **kwargs)

        monkeypatch.setattr(layers, name, counted)
    return calls


@pytest.fixture
def sends(monkeypatch) -> list[list[str]]:
    """The message types of each send the events module makes from now on."""
    sent: list[list[str]] = []
    send_all = events._asend_all

    async def recorded(held):
        sent.append([message["type"] for _, message in held])
        return await send_all(held)

    monkeypatch.setattr(events, "_asend_all", recorded)
    return sent


async def _joined(layer, *groups: str) -> str:
    channel = await layer.new_channel()
    for group in groups:
        await layer.group_add(group, channel)
    return channel


async def _received(layer, channel: str, count: int) -> list[dict]:
    return [await asyncio.wait_for(layer.receive(channel), timeout=5) for _ in range(count)]


@on_redis
async def test_two_messages_to_two_groups_are_two_round_trips(layer, scripts):
    staff, session = f"staff-{uuid.uuid4().hex}", f"patient-session.{uuid.uuid4().hex}"
    watcher, tab = await _joined(layer, staff), await _joined(layer, session)
    first, second = {"type": "first"}, {"type": "second"}
    await layer.group_sends([([staff, session], first), ([staff, session], second)])
    assert scripts == ["_members_script", "_send_script"]
    for channel in (watcher, tab):
        assert await _received(layer, channel, 2) == [first, second]


@on_redis
async def test_every_channel_gets_the_messages_in_the_order_given(layer):
    """Under one score a channel's messages would come in the order of their random prefixes
    (channels-redis' serializer): half the time the wrong one."""
    staff, session = f"staff-{uuid.uuid4().hex}", f"patient-session.{uuid.uuid4().hex}"
    watcher = await _joined(layer, staff)
    tabs = [await _joined(layer, session) for _ in range(2)]
    both = await _joined(layer, staff, session)  # gets each message twice, as group_send would
    for round_ in range(20):
        sends = [([staff, session], {"type": kind, "n": round_}) for kind in ("a", "b", "c")]
        await layer.group_sends(sends)
        for channel in (watcher, *tabs):
            kinds = [message["type"] for message in await _received(layer, channel, 3)]
            assert kinds == ["a", "b", "c"]
        kinds = [message["type"] for message in await _received(layer, both, 6)]
        assert kinds == ["a", "a", "b", "b", "c", "c"]


async def _published_together() -> tuple[list[dict], list[dict]]:
    """A cleared event and a presence event published in one ``together``: what the staff
    group and the session's group received."""
    layer = get_channel_layer()
    ref = f"ref{uuid.uuid4().hex}"
    staff = await _joined(layer, conf.PATIENT_EVENT_GROUP)
    tab = await _joined(layer, events.session_group(ref))
    try:
        async with events.together():
            assert await events.apublish({"session_ref": ref, "items_cleared": 3})
            assert await events.apublish_presence(ref, 2)
        return await _received(layer, staff, 2), await _received(layer, tab, 2)
    finally:
        await layer.group_discard(conf.PATIENT_EVENT_GROUP, staff)


def _activity_send(ref: str, items: int | None = 0) -> tuple[list[str], dict]:
    event = {"session_ref": ref, "seen": time.time(), "items": items}
    return events._groups(ref), {"type": events.ACTIVITY_TYPE, "event": event}


@pytest.mark.usefixtures("scanned_frames")
async def test_events_published_together_arrive_in_their_order():
    """On whichever layer is configured (the in-memory one has no ``group_sends``: one
    message after the other)."""
    for received in await _published_together():
        assert [message["type"] for message in received] == [
            events.EVENT_TYPE,
            events.PRESENCE_TYPE,
        ]


@pytest.mark.usefixtures("scanned_frames")
async def test_events_published_together_are_one_send(sends):
    await _published_together()
    assert sends == [[events.EVENT_TYPE, events.PRESENCE_TYPE]]


@on_redis
@pytest.mark.usefixtures("scanned_frames")
async def test_events_published_together_are_two_round_trips_on_redis(scripts):
    await _published_together()
    assert scripts == ["_members_script", "_send_script"]


@pytest.mark.usefixtures("scanned_frames")
async def test_what_was_published_goes_out_when_the_block_raises():
    layer = get_channel_layer()
    ref = f"ref{uuid.uuid4().hex}"
    tab = await _joined(layer, events.session_group(ref))
    with pytest.raises(RuntimeError):
        async with events.together():
            await events.apublish({"session_ref": ref, "items_cleared": 1})
            raise RuntimeError("after the cleanup")
    assert (await _received(layer, tab, 1))[0]["type"] == events.EVENT_TYPE


@pytest.mark.usefixtures("scanned_frames")
async def test_a_nested_block_sends_with_the_outer_one(sends):
    async with events.together():
        async with events.together():
            await events.apublish({"session_ref": "inner", "items_cleared": 1})
        assert sends == []
        await events.apublish({"session_ref": "outer", "items_cleared": 1})
    await events.apublish({"session_ref": "after", "items_cleared": 1})
    assert [len(types) for types in sends] == [2, 1]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("scanned_frames")
async def test_an_http_cleanup_sends_one_event_with_its_click_in_it(clinician, sends):
    client = await live.signed_in(clinician)
    staff_client = await live.signed_in(await live.staff_user(), patient_data=False)
    staff = await live.monitor_socket(staff_client)
    socket = await live.session_socket(client)
    await live.rewrite(client, seen=time.time() - 60)  # the click's activity is due
    sends.clear()  # (the connects' presence events)
    assert (await client.post("/api/clear-patient-session/")).status_code == 200
    assert sends == [[events.EVENT_TYPE]]
    for receiver in (socket, staff):
        frame = await receiver.expect("session.cleared")  # (presence frames of the connects)
        assert frame["activity"] is True
        assert frame["items_cleared"] > 0
        assert await receiver.nothing()  # no session.activity after it
    await socket.close()
    await staff.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("scanned_frames")
async def test_an_http_cleanup_without_a_due_activity_write_has_no_activity_in_its_event(
    clinician, sends
):
    client = await live.signed_in(clinician)
    socket = await live.session_socket(client)
    await live.rewrite(client, seen=time.time())  # written just now: this click is not
    sends.clear()
    assert (await client.post("/api/clear-patient-session/")).status_code == 200
    assert sends == [[events.EVENT_TYPE]]
    assert "activity" not in await socket.expect("session.cleared")
    await socket.close()


async def _folded(*publishes) -> list[dict]:
    """The messages of one ``together`` block whose publishes are ``publishes`` (sends)."""
    sent: list[dict] = []

    async def recorded(held):
        sent.extend(message for _, message in held)
        return True

    original = events._asend_all
    events._asend_all = recorded
    try:
        async with events.together():
            for groups, message in publishes:
                await events._asend(groups, message)
    finally:
        events._asend_all = original
    return sent


def _cleanup_send(ref: str) -> tuple[list[str], dict]:
    event = {"session_ref": ref, "items_cleared": 2, "action": "clear_patient_data"}
    return events._groups(ref), {"type": events.EVENT_TYPE, "event": event}


async def test_an_activity_rides_in_its_sessions_cleanup_of_the_same_block():
    cleared, activity = _cleanup_send("a" * 32), _activity_send("a" * 32)
    sent = await _folded(cleared, activity)
    assert [message["type"] for message in sent] == [events.EVENT_TYPE]
    assert sent[0]["event"]["seen"] == activity[1]["event"]["seen"]
    assert sent[0]["event"]["items_cleared"] == 2
    assert "seen" not in cleared[1]["event"]  # the published event itself is not changed


async def test_an_activity_before_its_sessions_cleanup_rides_in_it_too():
    sent = await _folded(_activity_send("a" * 32, items=None), _cleanup_send("a" * 32))
    assert [message["type"] for message in sent] == [events.EVENT_TYPE]
    assert "seen" in sent[0]["event"]


@pytest.mark.parametrize(
    "activity",
    [
        _activity_send("b" * 32),  # another session's activity
        _activity_send("a" * 32, items=2),  # the session holds data again after it
    ],
)
async def test_an_activity_that_says_more_than_the_cleanup_goes_on_its_own(activity):
    sent = await _folded(_cleanup_send("a" * 32), activity)
    assert [message["type"] for message in sent] == [events.EVENT_TYPE, events.ACTIVITY_TYPE]
    assert "seen" not in sent[0]["event"]


async def test_an_activity_is_not_folded_into_a_bulk_summary():
    summary = (
        [conf.PATIENT_EVENT_GROUP],
        {"type": events.EVENT_TYPE, "event": {"session_ref": "-"}},
    )
    sent = await _folded(summary, _activity_send("-"))
    assert [message["type"] for message in sent] == [events.EVENT_TYPE, events.ACTIVITY_TYPE]


@pytest.mark.usefixtures("scanned_frames")
async def test_a_task_started_inside_the_block_publishes_at_once_after_it():
    """A task keeps a copy of the context it was started in: a publish of it after the
    block's send is not held back for good."""
    layer = get_channel_layer()
    ref = f"ref{uuid.uuid4().hex}"
    tab = await _joined(layer, events.session_group(ref))
    go = asyncio.Event()

    async def later() -> bool:
        await go.wait()
        return await events.apublish({"session_ref": ref, "items_cleared": 2})

    async with events.together():
        task = asyncio.ensure_future(later())
    go.set()
    assert await task
    assert (await _received(layer, tab, 1))[0]["event"]["items_cleared"] == 2
