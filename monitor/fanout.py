"""This process's listener for what is sent to every process holding sockets.

A bulk run publishes one batch of cleanups per page to ``events.PROCESSES_GROUP`` instead of
one message per session; each process hands each cleanup to the sockets it holds for that
session (``timers.sockets_of``), and wakes every timer when the epoch advanced.

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

logger = logging.getLogger("monitor.fanout")

#: Seconds between two renewals of the group memberships (well below any group_expiry).
RENEW_EVERY = 60.0

_listener: asyncio.Task | None = None
#: Every open socket of this process (both kinds), for renewing their group memberships.
_sockets: weakref.WeakSet = weakref.WeakSet()


def register(socket: Any) -> None:
    """Count an accepted socket in, and start this process's listener (lazily: daphne has no
    start-up hook)."""
    global _listener
    _sockets.add(socket)
    loop = asyncio.get_running_loop()
    if _listener is None or _listener.done() or _listener.get_loop() is not loop:
        _listener = loop.create_task(_listen())


def unregister(socket: Any) -> None:
    _sockets.discard(socket)


async def astop() -> None:
    """Stop this process's listener (it restarts with the next socket): a receive left
    pending on a finished event loop would hold channels-redis' receive lock for good."""
    global _listener
    if _listener is not None and not _listener.done():
        _listener.cancel()
        await asyncio.gather(_listener, return_exceptions=True)
    _listener = None


async def deliver(message: dict[str, Any]) -> None:
    """Hand one batch to the sockets of this process."""
    for event in message.get("events", ()):
        for socket in timers.sockets_of(event.get("session_ref", "-")):
            await socket.on_cleanup(event)
    if message.get("epoch_advanced"):
        timers.wake_all()


async def _renew(layer: Any, channel: str) -> None:
    memberships = [(events.PROCESSES_GROUP, channel)]
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
    channel = None
    while True:
        try:
            if channel is None:
                channel = await layer.new_channel()
                await _renew(layer, channel)
            try:
                message = await asyncio.wait_for(layer.receive(channel), RENEW_EVERY)
            except asyncio.TimeoutError:
                await _renew(layer, channel)
                continue
            if message.get("type") == events.BATCH_TYPE:
                await deliver(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the layer is away: retry, never give up
            logger.warning("Live fan-out unavailable (%s); retrying.", type(exc).__name__)
            channel = None
            await asyncio.sleep(RENEW_EVERY / 12)
