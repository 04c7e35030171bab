"""Cleanup and activity events for the live side, published on the channel layer.

Each cleanup goes to the staff monitor's group (``PATIENT_EVENT_GROUP``) and to the cleaned
session's own group (``patient-session.<session_ref>``, every socket of that session in every
process). A bulk run sends one batch per page to the processes' group instead of one message
per session; each process hands the batch to the sockets it holds (``monitor.local``).

Publishing is best effort with a short timeout: when the layer (Redis) is down the live view
misses the event, the cleanup itself has already happened and is audited.

The events published inside :func:`together` go out at its end, in one send (with the Redis
layer two round trips for all of them instead of two each), in the order they were published.
An activity published in the same block as its session's cleanup rides in the cleanup's event
(``seen``; the frame's ``activity: true``) instead of going out on its own: an HTTP cleanup's
click costs its session's sockets and every staff socket one frame, not two.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from patient_data import meta as session_meta
from patient_data.conf import conf
from patient_data.refs import session_ref
from patient_data.registry import get_registry

logger = logging.getLogger("patient_data.events")

EVENT_TYPE = "patient_session.event"
ACTIVITY_TYPE = "patient_session.activity"
PRESENCE_TYPE = "patient_session.presence"
STORED_TYPE = "patient_session.stored"
BATCH_TYPE = "patient_session.batch"
#: Every process holding sockets listens here for bulk batches.
PROCESSES_GROUP = "patient-session-processes"
SESSION_GROUP_PREFIX = "patient-session."


#: This thread's event loop for its sync publishes while :func:`one_loop` runs.
_loops = threading.local()


@contextlib.contextmanager
def one_loop() -> Iterator[None]:
    """The sync publishes of this thread inside the block (a bulk run's: one per page) run on
    one event loop kept for the block, in this thread, instead of ``async_to_sync``'s new
    event loop in a new thread per call (outside any loop: 0.5-2 ms of CPU each, and with
    the Redis layer a new connection each time). The same sends in the same order, each
    waited for as before. At the end the loop's tasks are cancelled and the loop is closed
    (channels-redis then closes its connections of that loop), as ``async_to_sync`` does
    after each call. Nested, or inside a running event loop (where the sync publishes
    refuse to run as before), the block changes nothing; a forked child drops the loop.
    """
    if getattr(_loops, "loop", None) is not None or _running():
        yield
        return
    loop = _loops.loop = asyncio.new_event_loop()
    try:
        yield
    finally:
        _loops.loop = None
        _close(loop)


def _running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _close(loop: asyncio.AbstractEventLoop) -> None:
    try:
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        if tasks:  # gather() of nothing would take the thread's loop, not this one
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()


def _forget_loop() -> None:
    _loops.loop = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_loop)


def _sync(function: Callable[..., Any]) -> Callable[..., Any]:
    """``async_to_sync(function)``, on this thread's :func:`one_loop` when one is open."""
    loop = getattr(_loops, "loop", None)
    if loop is None:
        return async_to_sync(function)
    return lambda *args, **kwargs: loop.run_until_complete(function(*args, **kwargs))


def session_group(ref: str) -> str:
    """The channel-layer group of every socket of the session with keyed ref ``ref``."""
    return SESSION_GROUP_PREFIX + ref


Send = tuple[list[str], dict[str, Any]]


class _Held(list):
    """The sends an open :func:`together` holds back; closed once it sends them (a task
    started inside the block keeps a copy of the context: its later publishes go at once)."""

    open = True


_held: ContextVar[_Held | None] = ContextVar("patient_data.events.held", default=None)


@contextlib.asynccontextmanager
async def together() -> AsyncIterator[None]:
    """Hold the events published inside back, and send them at the end in one send, in
    their order (also when the block raises: what was published has happened). A publish
    inside answers True once held. Nested: the outermost block sends."""
    outer = _held.get()
    if outer is not None and outer.open:
        yield
        return
    held = _Held()
    token = _held.set(held)
    try:
        yield
    finally:
        _held.reset(token)
        held.open = False
        if held:
            await _asend_all(_fold_activity(held))


def _fold_activity(sends: Sequence[Send]) -> list[Send]:
    """The sends, each activity of a session whose cleanup is among them folded into that
    cleanup's event as ``seen`` (the session holds no patient data after its cleanup, so
    the activity says nothing else). Everything else as it was, in its order; the messages
    published are not changed (a folded cleanup goes out as a new message)."""
    cleanups = {
        message["event"].get("session_ref"): index
        for index, (_, message) in enumerate(sends)
        if message["type"] == EVENT_TYPE and message["event"].get("session_ref", "-") != "-"
    }
    kept: dict[int, Send] = dict(enumerate(sends))
    for index, (_, message) in enumerate(sends):
        event = message["event"]
        if message["type"] != ACTIVITY_TYPE or event["items"] not in (0, None):
            continue
        if (at := cleanups.get(event["session_ref"])) is not None:
            groups, cleanup = kept[at]
            kept[at] = (groups, {**cleanup, "event": {**cleanup["event"], "seen": event["seen"]}})
            del kept[index]
    return list(kept.values())


async def _asend(groups: Iterable[str], message: dict[str, Any]) -> bool:
    held = _held.get()
    if held is not None and held.open:
        held.append((list(groups), message))
        return True
    return await _asend_all([(list(groups), message)])


async def _in_order(layer: Any, sends: Sequence[Send]) -> None:
    """A layer without ``group_sends``: each message to its groups, one message after the
    other (a channel gets them in order)."""
    for groups, message in sends:
        await asyncio.gather(*(layer.group_send(group, message) for group in groups))


async def _asend_all(sends: Sequence[Send]) -> bool:
    layer = get_channel_layer()
    if layer is None:
        return False
    group_sends = getattr(layer, "group_sends", None)  # monitor.layers: two round trips
    work = group_sends(sends) if group_sends is not None else _in_order(layer, sends)
    try:
        await asyncio.wait_for(work, timeout=conf.PATIENT_EVENT_PUBLISH_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - any layer failure only degrades the live view
        logger.warning("Live monitor unavailable, event not published (%s).", type(exc).__name__)
        return False
    return True


def _groups(ref: str) -> list[str]:
    groups = [conf.PATIENT_EVENT_GROUP]
    if ref and ref != "-":
        groups.append(session_group(ref))
    return groups


async def apublish(event: dict[str, Any]) -> bool:
    """Send a cleanup ``event`` to the monitor and to its session's sockets; False when the
    live side is unavailable."""
    return await _asend(
        _groups(event.get("session_ref", "-")), {"type": EVENT_TYPE, "event": event}
    )


def publish(event: dict[str, Any]) -> bool:
    """Sync twin of :func:`apublish` (commands, sync middleware, signal receivers)."""
    return _sync(apublish)(event)


def _activity(
    session_key: str | None, seen: float, items: int | None
) -> tuple[list[str], dict[str, Any]]:
    ref = session_ref(session_key)
    event = {"session_ref": ref, "seen": seen, "items": items}
    return _groups(ref), {"type": ACTIVITY_TYPE, "event": event}


async def apublish_activity(session_key: str | None, seen: float, items: int | None = None) -> bool:
    """Activity recorded for a session at ``seen`` (epoch s): its sockets' timers follow.
    ``items``: the patient data items the session holds (None: not known); the staff
    dashboard asks for a new snapshot only for a session holding data it does not list."""
    if not session_key:
        return False
    return await _asend(*_activity(session_key, seen, items))


def publish_activity(session_key: str | None, seen: float, items: int | None = None) -> bool:
    """Sync twin of :func:`apublish_activity`."""
    if not session_key:
        return False
    return _sync(_asend)(*_activity(session_key, seen, items))


def _stored(session_key: str, user: str, data: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    ref = session_ref(session_key)
    keys = get_registry().patient_keys(data)
    event = {
        "session_ref": ref,
        "user": user,
        "items": len(keys),
        "keys": get_registry().entries(keys),
        "seen": session_meta.read(data).get("seen"),
    }
    return _groups(ref), {"type": STORED_TYPE, "event": event}


async def apublish_stored(session_key: str | None, user: str, data: dict[str, Any]) -> bool:
    """Patient data was stored in a session: the monitor lists it at once (counts and
    registry entry names, never values)."""
    if not session_key:
        return False
    return await _asend(*_stored(session_key, user, data))


def publish_stored(session_key: str | None, user: str, data: dict[str, Any]) -> bool:
    """Sync twin of :func:`apublish_stored`."""
    if not session_key:
        return False
    return _sync(_asend)(*_stored(session_key, user, data))


async def apublish_presence(ref: str, open_tabs: int) -> bool:
    """How many sockets the session ``ref`` has open now (all processes)."""
    event = {"session_ref": ref, "open_tabs": open_tabs}
    return await _asend(_groups(ref), {"type": PRESENCE_TYPE, "event": event})


def publish_batch(events: list[dict[str, Any]], *, epoch_advanced: bool = False) -> bool:
    """A bulk run's cleanups (one page) to every process holding sockets. ``epoch_advanced``
    tells them every stored patient stamp is void: their sessions are judged again."""
    message = {"type": BATCH_TYPE, "events": events, "epoch_advanced": epoch_advanced}
    return _sync(_asend)([PROCESSES_GROUP], message)
