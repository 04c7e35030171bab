"""A socket handles the channel-layer messages buffered for it after one, at once and in their
order, instead of waiting for each in turns of the event loop (``_LiveSocket.dispatch``)."""

from __future__ import annotations

import collections

import pytest

from monitor import consumers


class BufferedLayer:
    """A layer whose pump has buffered ``messages`` for the socket's channel."""

    def __init__(self, messages: list[dict]) -> None:
        self.buffered = collections.deque(messages)
        self.taken = 0

    def receive_nowait(self, channel: str) -> dict | None:
        assert channel == "specific.test!socket"
        if not self.buffered:
            return None
        self.taken += 1
        return self.buffered.popleft()


def _event(number: int) -> dict:
    return {
        "type": "patient.session.event",
        "event": {"session_ref": f"ref{number}", "reason": "manual_cleanup", "action": "clear"},
    }


def _monitor(layer) -> tuple[consumers.MonitorConsumer, list[str]]:
    socket = consumers.MonitorConsumer()
    socket.channel_layer, socket.channel_name = layer, "specific.test!socket"
    frames: list[str] = []

    async def push(text: str) -> None:
        frames.append(text)

    socket.push = push
    return socket, frames


def _sessions(frames: list[str]) -> list[str]:
    import json

    return [json.loads(frame)["session"] for frame in frames]


async def test_the_messages_buffered_behind_one_are_handled_with_it_in_order():
    layer = BufferedLayer([_event(n) for n in range(1, 4)])
    socket, frames = _monitor(layer)
    await socket.dispatch(_event(0))
    assert _sessions(frames) == ["ref0", "ref1", "ref2", "ref3"]
    assert layer.taken == 3 and not layer.buffered


async def test_no_more_than_a_bounded_number_at_once():
    layer = BufferedLayer([_event(n) for n in range(1, consumers.DRAIN_AT_ONCE + 10)])
    socket, frames = _monitor(layer)
    await socket.dispatch(_event(0))
    assert len(frames) == 1 + consumers.DRAIN_AT_ONCE
    assert len(layer.buffered) == 9  # the next turn takes them: a browser's command waits less


async def test_a_browser_frame_takes_nothing_of_the_layer():
    layer = BufferedLayer([_event(1)])
    socket, _ = _monitor(layer)
    socket.closed = True  # a frame from the browser to a closing socket: nothing to answer
    await socket.dispatch({"type": "websocket.receive", "text": '{"type": "status"}'})
    assert layer.taken == 0


async def test_a_layer_without_a_buffer_to_take_from_is_waited_for_as_by_channels():
    socket, frames = _monitor(object())  # the in-memory layer has no receive_nowait
    await socket.dispatch(_event(0))
    assert _sessions(frames) == ["ref0"]


async def test_a_message_without_a_handler_is_refused_as_by_channels():
    socket, _ = _monitor(BufferedLayer([]))
    with pytest.raises(ValueError, match="No handler"):
        await socket.dispatch({"type": "no.such.thing"})
