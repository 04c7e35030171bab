"""This process's listener for what is sent to every process holding sockets, and to the staff.

A bulk run publishes one batch of cleanups per page to ``events.PROCESSES_GROUP`` instead of
one message per session; each process hands each cleanup to the sockets it holds for that
session (``timers.sockets_of``), and wakes every timer when the epoch advanced.

The staff monitor's events (``conf.PATIENT_EVENT_GROUP``: every session's cleanups, activity,
presence, stored data) reach the staff sockets of a process through the same listener: while a
process holds a staff socket, its listener's channel is in that group, and each event is one
message per process, handed to each of its staff sockets in order, instead of one message per
staff socket (a Redis push, a take and a decode each, at a hundred events a second). A staff
socket counts in (:func:`awatch`) only once the process is in the group, and the events that
reach it before its snapshot went out wait for it (:func:`aready`), so its frames come in the
order its own channel gave them before: the snapshot, then every event published after it
was read.

It also renews the group memberships of this process's sockets: channels-redis forgets a
membership after ``group_expiry`` seconds, and a socket may stay open longer than that.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

from channels.layers import get_channel_layer

from monitor import timers
from patient_data import events
from patient_data.conf import conf

logger = logging.getLogger("monitor.fanout")

#: Seconds between two renewals of the group memberships (well below any group_expiry).
RENEW_EVERY = 60.0
#: At most this many buffered messages of the listener's channel handled after one.
DRAIN_AT_ONCE = 50
#: What the staff monitor's group carries (each handled by the staff socket's own handler).
STAFF_TYPES = frozenset(
    {events.EVENT_TYPE, events.ACTIVITY_TYPE, events.PRESENCE_TYPE, events.STORED_TYPE}
)

_listener: asyncio.Task | None = None
#: Every open socket of this process (both kinds), for renewing their group memberships.
_sockets: weakref.WeakSet = weakref.WeakSet()
#: This process's staff sockets, each with the events held back until its snapshot went out
#: (a list), or None once it gets them as they come.
_staff: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
#: The listener's channel, the layer it is of, and whether it is in the monitor's group.
_channel: str | None = None
_layer: Any = None
_watching = False
#: Guards the channel and its membership of the monitor group (one lock per event loop).
_locks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def register(socket: Any) -> None:
    """Count an accepted socket in, and start this process's listener (lazily: daphne has no
    start-up hook)."""
    global _listener
    _sockets.add(socket)
    loop = asyncio.get_running_loop()
    if _listener is None or _listener.done() or _listener.get_loop() is not loop:
        _forget_channel()  # a new listener takes a new channel
        _listener = loop.create_task(_listen())


def unregister(socket: Any) -> None:
    _sockets.discard(socket)


async def awatch(socket: Any) -> None:
    """Count a staff socket in: once this returns, this process is in the monitor's group, and
    every event published from then on reaches the socket, held back until :func:`aready`.
    Raises what the layer raises (Redis away): the socket is then refused, as before."""
    register(socket)
    _staff[socket] = []
    try:
        await _follow_staff()
    except BaseException:
        _staff.pop(socket, None)
        raise


async def aready(socket: Any) -> None:
    """The staff socket's first frame went out: the events held for it follow, in order, and
    the next ones go to it as they come."""
    while held := _staff.get(socket):
        await _hand(socket, held.pop(0))
    if socket in _staff:
        _staff[socket] = None


async def aunwatch(socket: Any) -> None:
    """Count a staff socket out; the last one of the process takes it out of the group."""
    if _staff.pop(socket, False) is not False:
        await _follow_staff()


async def astop() -> None:
    """Stop this process's listener (it restarts with the next socket): a receive left
    pending on a finished event loop would hold channels-redis' receive lock for good."""
    global _listener
    if _listener is not None and not _listener.done():
        _listener.cancel()
        await asyncio.gather(_listener, return_exceptions=True)
    _listener = None
    _forget_channel()
    _staff.clear()


def _lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _locks.get(loop)
    if lock is None:
        lock = _locks[loop] = asyncio.Lock()
    return lock


def _forget_channel() -> None:
    global _channel, _layer, _watching
    _channel, _layer, _watching = None, None, False


async def _open(layer: Any) -> str:
    """The listener's channel, made and put in its groups first if there is none."""
    async with _lock():
        return await _opened(layer)


async def _opened(layer: Any) -> str:
    global _channel, _layer, _watching
    if _channel is None or _layer is not layer:
        channel = await layer.new_channel()
        _watching = bool(_staff)
        await _renew(layer, channel)
        _channel, _layer = channel, layer
    return _channel


async def _follow_staff() -> None:
    """Put the listener's channel in the monitor's group while the process has a staff
    socket, and take it out once it has none (under the lock: any order of connects and
    closes ends in the membership the sockets still open ask for)."""
    global _watching
    layer = get_channel_layer()
    async with _lock():
        channel = await _opened(layer)
        if _staff and not _watching:
            await layer.group_add(conf.PATIENT_EVENT_GROUP, channel)
            _watching = True
        elif not _staff and _watching:
            await layer.group_discard(conf.PATIENT_EVENT_GROUP, channel)
            _watching = False


async def deliver(message: dict[str, Any]) -> None:
    """Hand one batch to the sockets of this process."""
    for event in message.get("events", ()):
        for socket in timers.sockets_of(event.get("session_ref", "-")):
            await socket.on_cleanup(event)
    if message.get("epoch_advanced"):
        timers.wake_all()


async def _hand(socket: Any, message: dict[str, Any]) -> None:
    """One event to one staff socket: a failure ends nothing but that frame."""
    try:
        await socket.on_monitor_event(message)
    except Exception as exc:  # noqa: BLE001 - one socket's failure never stops the others'
        logger.warning("Staff frame not sent (%s).", type(exc).__name__)


async def _handle(message: dict[str, Any]) -> None:
    kind = message.get("type")
    if kind == events.BATCH_TYPE:
        await deliver(message)
    elif kind in STAFF_TYPES:
        for socket in list(_staff):
            held = _staff.get(socket, False)  # False: it closed meanwhile
            if held is None:
                await _hand(socket, message)
            elif held is not False:
                held.append(message)


async def _renew(layer: Any, channel: str) -> None:
    memberships = [(events.PROCESSES_GROUP, channel)]
    if _watching:
        memberships.append((conf.PATIENT_EVENT_GROUP, channel))
    memberships += [(group, s.channel_name) for s in list(_sockets) for group in s.groups]
    add_many = getattr(layer, "group_add_many", None)  # the Redis layer's: a few pipelines
    if add_many is not None:
        return await add_many(memberships)
    for group, name in memberships:
        await layer.group_add(group, name)


async def _listen() -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    while True:
        try:
            channel = await _open(layer)
            try:
                message = await asyncio.wait_for(layer.receive(channel), RENEW_EVERY)
            except asyncio.TimeoutError:
                await _renew(layer, channel)
                continue
            await _handle(message)
            take = getattr(layer, "receive_nowait", None)  # the Redis layer's
            for _ in range(DRAIN_AT_ONCE if take is not None else 0):
                if (more := take(channel)) is None:
                    break
                await _handle(more)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the layer is away: retry, never give up
            logger.warning("Live fan-out unavailable (%s); retrying.", type(exc).__name__)
            _forget_channel()
            await asyncio.sleep(RENEW_EVERY / 12)
