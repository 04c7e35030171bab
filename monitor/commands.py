"""What each socket command does. Every cleanup goes through ``patient_data.cleanup``.

A command runs on the session as stored now (``SessionTarget``); the answer is exactly one
frame: a ``reply``, a state frame, or an ``error``.
"""

from __future__ import annotations

import logging
import time

from channels.db import aclose_old_connections

from monitor import auth, presence, state
from monitor.protocol import Command, ProtocolError, reply_frame
from monitor.sessions import Identity, SessionTarget
from patient_data import activity, audit, cleanup, events, index, policy
from patient_data.cleanup import Cleanup
from patient_data.models import CleanupEvent
from patient_data.registry import META_KEY, get_registry

logger = logging.getLogger("monitor.commands")

STAFF_REASONS = {"cleanup": "staff_cleanup", "end_session": "staff_end_session"}


class SessionLost(Exception):
    """The socket's session is no longer signed in as its user (close 4003)."""


async def _refuse(identity: Identity, command: Command, source: str) -> None:
    """Audit an attempt on a session the user may not act on, with the actor."""
    action = (
        CleanupEvent.Action.END_SESSION
        if command.type == "end_session"
        else CleanupEvent.Action.CLEAR_PATIENT_DATA
    )
    refusal = Cleanup(action, "forbidden", source, 0, (), command.session or "-", identity.user.pk)
    await audit.arecord(refusal)
    logger.warning("Refused %s on another session by user %s.", command.type, identity.user.pk)
    raise ProtocolError("forbidden", command.id)


async def _own_session(identity: Identity) -> SessionTarget:
    """The socket's session as stored now (old database connections closed first)."""
    target = SessionTarget(identity.session_key)
    if not await target.aopen(identity):
        raise SessionLost
    return target


class ActivityThrottle:
    """At most one activity write per session per ``PATIENT_ACTIVITY_WRITE_INTERVAL`` from
    this process, decided in memory: most ``activity`` frames cost no I/O at all."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def due(self, ref: str, now: float) -> bool:
        if not policy.activity_due({"seen": self._last.get(ref)}, now):
            return False
        self._last[ref] = now
        return True

    def forget(self, ref: str) -> None:
        self._last.pop(ref, None)


throttle = ActivityThrottle()


async def _activity(identity: Identity, command: Command) -> str:
    now = time.time()
    if not throttle.due(identity.ref, now):
        return reply_frame(command, recorded=False)
    target = await _own_session(identity)
    data = await target.adata()
    info = activity.stamped(data, now)
    if info is not None:
        await target.session.aset(META_KEY, info)
        await target.session.asave()
        items = len(get_registry().patient_keys(data))
        await events.apublish_activity(identity.session_key, now, items)
    return reply_frame(command, recorded=info is not None)


async def arun_session_command(identity: Identity, command: Command) -> str:
    """Run a command of the session's own socket; SessionLost when it is signed out."""
    if command.type == "activity":
        return await _activity(identity, command)
    if command.session is not None and command.session != identity.ref:
        await aclose_old_connections()
        await _refuse(identity, command, "socket")
    target = await _own_session(identity)
    if command.type == "status":
        data = await target.adata()
        return state.session_state(
            identity.ref, data, await presence.acount(identity.ref), id=command.id
        )
    if command.type == "emergency_cleanup":
        items = await cleanup.aend_session(
            target, reason="emergency_cleanup", source="socket", actor=identity.user
        )
    else:
        items = await cleanup.aclear_patient_session_data(
            target, reason="manual_cleanup", source="socket", actor=identity.user
        )
    return reply_frame(command, items_cleared=items)


async def arun_staff_command(identity: Identity, command: Command) -> str:
    """Run a command of the staff monitor's socket."""
    await aclose_old_connections()
    if command.type == "status":
        return await state.asnapshot(id=command.id)
    if not await auth.acan_act(identity.user):
        await _refuse(identity, command, "staff")
    items = await index.aclear_by_ref(
        command.session or "",
        reason=STAFF_REASONS[command.type],
        source="staff",
        actor=identity.user,
        end=command.type == "end_session",
    )
    if items is None:
        raise ProtocolError("no_such_session", command.id)
    return reply_frame(command, items_cleared=items)
