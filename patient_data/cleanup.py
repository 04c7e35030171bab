"""The cleanup service: the one place where patient data leaves a session.

Every trigger calls it: the middleware (timeouts, lost authentication, epoch), the HTTP API,
logout, the WebSocket commands, presence, and the bulk commands. Each cleanup is persisted at
once under a new cleanup generation (so no concurrent request can write the data back), then
audited, signalled (``patient_session_cleared``) and published to the live monitor.

Functions take an ``HttpRequest`` (or anything with ``.session`` and optionally ``.user``) or a
bare ``SessionBase``, and return the number of patient data items cleared.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth import alogout, logout
from django.contrib.sessions.backends.base import SessionBase

from patient_data import audit, events, guard
from patient_data.models import CleanupEvent
from patient_data.refs import session_ref
from patient_data.registry import get_registry
from patient_data.signals import patient_session_cleared

logger = logging.getLogger("patient_data.cleanup")

#: Set on a request while the service ends its session, so the logout receiver does not
#: record the same logout a second time.
ACTIVE_FLAG = "_patient_cleanup_active"
#: Set on a request once the end of its session (logout) has been recorded.
LOGOUT_RECORDED_FLAG = "_patient_logout_recorded"


@dataclass(frozen=True)
class Cleanup:
    """What one cleanup did: counts, registry entries and a keyed hash, never values."""

    action: str
    reason: str
    source: str
    items_cleared: int
    keys: tuple[str, ...]
    session_ref: str
    actor_id: int | None = None

    def as_event(self) -> dict[str, Any]:
        event = asdict(self)
        event["keys"] = list(self.keys)
        return event


def _session_of(target: Any) -> SessionBase:
    return target if isinstance(target, SessionBase) else target.session


def _actor_id(target: Any, actor: Any) -> int | None:
    user = actor if actor is not None else getattr(target, "_cached_user", None)
    if user is None:
        user = getattr(target, "_acached_user", None)
    if user is not None and getattr(user, "is_authenticated", False):
        return user.pk
    return None


def _result(target: Any, action: str, reason: str, source: str, actor: Any, keys: list[str]):
    return Cleanup(
        action=action,
        reason=reason,
        source=source,
        items_cleared=len(keys),
        keys=tuple(get_registry().entries(keys)),
        session_ref=session_ref(_session_of(target).session_key),
        actor_id=_actor_id(target, actor),
    )


def _finish(target: Any, cleanup: Cleanup) -> int:
    if cleanup.action == CleanupEvent.Action.END_SESSION and not isinstance(target, SessionBase):
        setattr(target, LOGOUT_RECORDED_FLAG, True)
    return cleanup.items_cleared


def _persist(session: SessionBase) -> None:
    """Write the cleaned session now, under a new cleanup generation."""
    client_side = getattr(session, "client_side", False)
    if session.session_key is None and not client_side:
        return  # never stored: nothing to clean anywhere but in memory
    data = session._get_session()
    guard.bump_and_save(data, getattr(session, "save_unguarded", session.save))
    # Written already, so SessionMiddleware need not write the same blob again; a client-side
    # session must still reach the browser as a new cookie.
    session.modified = client_side


def _announce(cleanup: Cleanup) -> None:
    if cleanup.items_cleared or cleanup.action == CleanupEvent.Action.END_SESSION:
        audit.record(cleanup)
    patient_session_cleared.send(sender=Cleanup, **asdict(cleanup))
    events.publish(cleanup.as_event())
    logger.debug("Cleanup %s/%s: %d items.", cleanup.reason, cleanup.source, cleanup.items_cleared)


async def _aannounce(cleanup: Cleanup) -> None:
    if cleanup.items_cleared or cleanup.action == CleanupEvent.Action.END_SESSION:
        await audit.arecord(cleanup)
    await patient_session_cleared.asend(sender=Cleanup, **asdict(cleanup))
    await events.apublish(cleanup.as_event())
    logger.debug("Cleanup %s/%s: %d items.", cleanup.reason, cleanup.source, cleanup.items_cleared)


def clear_patient_session_data(
    target: Any,
    *,
    reason: str = "manual_cleanup",
    source: str = "api",
    actor: Any = None,
    action: str = CleanupEvent.Action.CLEAR_PATIENT_DATA,
) -> int:
    """Remove every registered patient key from the session; returns how many were removed."""
    session = _session_of(target)
    keys = get_registry().patient_keys(list(session.keys()))
    for key in keys:
        del session[key]
    if keys:
        _persist(session)
    cleanup = _result(target, action, reason, source, actor, keys)
    _announce(cleanup)
    return _finish(target, cleanup)


async def aclear_patient_session_data(
    target: Any,
    *,
    reason: str = "manual_cleanup",
    source: str = "api",
    actor: Any = None,
    action: str = CleanupEvent.Action.CLEAR_PATIENT_DATA,
) -> int:
    """Async twin of :func:`clear_patient_session_data`."""
    session = _session_of(target)
    keys = get_registry().patient_keys(list(await session.akeys()))
    for key in keys:
        del session[key]  # loaded above: no I/O here
    if keys:
        await sync_to_async(_persist)(session)
    cleanup = _result(target, action, reason, source, actor, keys)
    await _aannounce(cleanup)
    return _finish(target, cleanup)


def end_session(target: Any, *, reason: str, source: str, actor: Any = None) -> int:
    """Clear the patient data, then end the whole session (logging the user out)."""
    items = clear_patient_session_data(
        target, reason=reason, source=source, actor=actor, action=CleanupEvent.Action.END_SESSION
    )
    if isinstance(target, SessionBase):
        target.flush()
        return items
    setattr(target, ACTIVE_FLAG, True)
    try:
        logout(target)
    finally:
        setattr(target, ACTIVE_FLAG, False)
    return items


async def aend_session(target: Any, *, reason: str, source: str, actor: Any = None) -> int:
    """Async twin of :func:`end_session`."""
    items = await aclear_patient_session_data(
        target, reason=reason, source=source, actor=actor, action=CleanupEvent.Action.END_SESSION
    )
    if isinstance(target, SessionBase):
        await target.aflush()
        return items
    setattr(target, ACTIVE_FLAG, True)
    try:
        await alogout(target)
    finally:
        setattr(target, ACTIVE_FLAG, False)
    return items


async def avoid_client_session(
    meta_ref: str,
    session_ref: str,
    keys: tuple[str, ...],
    items: int,
    *,
    reason: str,
    source: str,
    actor: Any = None,
) -> int:
    """Clear a client-side session the server cannot load (it lives in a cookie): a new
    generation voids its patient data when the cookie next comes in; announced as usual."""
    await sync_to_async(guard.bump)(meta_ref)
    cleanup = Cleanup(
        CleanupEvent.Action.CLEAR_PATIENT_DATA,
        reason,
        source,
        items,
        keys,
        session_ref,
        _actor_id(None, actor),
    )
    await _aannounce(cleanup)
    return items


def record_lost(target: Any, before: dict[str, Any], *, reason: str, source: str) -> int:
    """Record a session that was flushed by other code; ``before`` is its earlier content."""
    keys = get_registry().patient_keys(before)
    cleanup = _result(target, CleanupEvent.Action.END_SESSION, reason, source, None, keys)
    _announce(cleanup)
    return cleanup.items_cleared


async def arecord_lost(target: Any, before: dict[str, Any], *, reason: str, source: str) -> int:
    """Async twin of :func:`record_lost`."""
    keys = get_registry().patient_keys(before)
    cleanup = _result(target, CleanupEvent.Action.END_SESSION, reason, source, None, keys)
    await _aannounce(cleanup)
    return cleanup.items_cleared


def on_user_logged_out(sender: Any, request: Any = None, user: Any = None, **kwargs: Any) -> None:
    """``user_logged_out`` receiver: a logout clears and records the patient data."""
    if request is None or getattr(request, ACTIVE_FLAG, False):
        return
    clear_patient_session_data(
        request,
        reason="logout",
        source="logout",
        actor=user,
        action=CleanupEvent.Action.END_SESSION,
    )


__all__ = [
    "Cleanup",
    "aclear_patient_session_data",
    "aend_session",
    "avoid_client_session",
    "clear_patient_session_data",
    "end_session",
    "record_lost",
]
