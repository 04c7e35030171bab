"""The cleanup service: the one place where patient data leaves a session.

Every trigger calls it: the middleware (timeouts, lost authentication, epoch), the HTTP API,
logout, the WebSocket commands, presence, and the bulk commands. Each cleanup is persisted at
once under a new cleanup generation (so no concurrent request can write the data back) and
audited in the same transaction (the audit row last, see ``patient_data.audit_chain``), then
signalled (``patient_session_cleared``) and published to the live monitor.

Functions take an ``HttpRequest`` (or anything with ``.session`` and optionally ``.user``) or a
bare ``SessionBase``, and return the number of patient data items cleared.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth import SESSION_KEY, alogout, logout
from django.contrib.sessions.backends.base import SessionBase, UpdateError

from patient_data import audit, events, guard, revocation
from patient_data import meta as session_meta
from patient_data.middleware.auth import USER_ATTR
from patient_data.models import CleanupEvent
from patient_data.notices import LAST_CLEANUP_ATTR
from patient_data.refs import session_ref
from patient_data.registry import META_KEY, get_registry
from patient_data.signals import patient_session_cleared

logger = logging.getLogger("patient_data.cleanup")

#: Set on a request while the service ends its session, so the logout receiver does not
#: record the same logout a second time.
ACTIVE_FLAG = "_patient_cleanup_active"
#: Set on a request once the end of its session (logout) has been recorded.
LOGOUT_RECORDED_FLAG = "_patient_logout_recorded"
#: Set on a request by a view: the trigger the client claims (validated, see ``ClientHint``),
#: recorded beside the source the server knows.
CLIENT_HINT_ATTR = "_patient_client_hint"


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
    client_hint: str | None = None

    def as_event(self) -> dict[str, Any]:
        # The fields as they are (all immutable): ``asdict``'s deep copy cost a bulk sweep
        # 20 µs per cleaned session.
        event = dict(vars(self))
        event["keys"] = list(self.keys)
        return event


def _session_of(target: Any) -> SessionBase:
    return target if isinstance(target, SessionBase) else target.session


def _actor_id(target: Any, actor: Any) -> int | None:
    # The user this request loaded already, if any (one shared load with the project's
    # authentication middleware, else Django's two caches); never a query of its own.
    user = actor
    for attr in (USER_ATTR, "_cached_user", "_acached_user"):
        if user is None:
            user = getattr(target, attr, None)
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
        client_hint=getattr(target, CLIENT_HINT_ATTR, None),
    )


def _ends_something(cleanup: Cleanup, held_login: bool) -> bool:
    """Worth an audit row: patient data went, or a login ended. An anonymous client asking to
    end a session it does not have ends nothing, and must not be able to fill the trail."""
    if cleanup.items_cleared:
        return True
    ended = cleanup.action == CleanupEvent.Action.END_SESSION
    return ended and (held_login or cleanup.actor_id is not None)


def _finish(target: Any, cleanup: Cleanup) -> int:
    if not isinstance(target, SessionBase):
        # The response tells the next page what happened (patient_data.notices).
        setattr(target, LAST_CLEANUP_ATTR, cleanup)
        if cleanup.action == CleanupEvent.Action.END_SESSION:
            setattr(target, LOGOUT_RECORDED_FLAG, True)
    return cleanup.items_cleared


def _persist(
    session: SessionBase, result: Callable[[], Cleanup], *, bump: bool = True
) -> Cleanup | None:
    """Write the cleaned session now, under the generation lock, and the audit row of the
    cleanup ``result()`` describes once it is written, in the same transaction (one commit: a
    cleanup is never without its row, nor a row without its cleanup); None when it is gone.

    Compare and set: the stored session is re-read under the lock, its patient keys dropped
    and the rest kept, so a change another request saved meanwhile (a preference) survives.
    ``bump=False`` for a copy that is void already (an older cookie or cache copy): its
    cleanup must not void the current copy too.
    """
    client_side = getattr(session, "client_side", False)
    if session.session_key is None and not client_side:
        # Never stored: nothing to clean anywhere but in memory, only the row to write.
        return _recorded(result())
    mine = session._get_session()
    info = session_meta.with_ref(session_meta.read(mine))
    stored_blob = getattr(session, "stored_blob", lambda: mine)
    try:
        with guard.cleaning(info["ref"], bump=bump) as generation:
            stored = stored_blob()
            if stored is None:
                raise UpdateError  # gone: nothing of this cleanup is written
            data = guard.merged(mine, getattr(session, "_as_loaded", None), stored)
            data[META_KEY] = session_meta.after_cleanup(info, generation)
            session._session_cache = data
            getattr(session, "save_unguarded", session.save)()
            # Last: the audit chain stays locked from its insert to this commit only.
            cleanup = _recorded(result())
    except UpdateError:
        return None  # removed before or between the read and the write
    # Written already, so SessionMiddleware need not write the same blob again; a client-side
    # session must still reach the browser as a new cookie.
    session.modified = client_side
    return cleanup


def _recorded(cleanup: Cleanup) -> Cleanup:
    # Patient data went: always worth a row (``_ends_something``).
    audit.record(cleanup)
    return cleanup


def _gone(session: SessionBase) -> bool:
    """Whether the stored session went away meanwhile (ended by a concurrent request)."""
    if session.session_key is None or getattr(session, "client_side", False):
        return False
    stored_blob = getattr(session, "stored_blob", None)
    return stored_blob is not None and stored_blob() is None


async def _agone(session: SessionBase) -> bool:
    """Async twin of :func:`_gone`."""
    if session.session_key is None or getattr(session, "client_side", False):
        return False
    astored_blob = getattr(session, "astored_blob", None)
    return astored_blob is not None and await astored_blob() is None


def _clear(
    target: Any, action: str, reason: str, source: str, actor: Any, bump: bool = True
) -> tuple[Cleanup, bool] | None:
    """Remove and persist; the cleanup and whether its audit row is written already (with
    the session), or None when the session was ended already (nothing to record)."""
    session = _session_of(target)
    keys = get_registry().patient_keys(list(session.keys()))
    for key in keys:
        del session[key]
    if keys:
        cleanup = _persist(
            session, lambda: _result(target, action, reason, source, actor, keys), bump=bump
        )
        return None if cleanup is None else (cleanup, True)
    if action == CleanupEvent.Action.END_SESSION and _gone(session):
        return None
    return _result(target, action, reason, source, actor, keys), False


async def _aclear(
    target: Any, action: str, reason: str, source: str, actor: Any, bump: bool = True
) -> tuple[Cleanup, bool] | None:
    """Remove and persist; the cleanup and whether its audit row is written already (one
    thread hop for both), or None when the session was ended already."""
    session = _session_of(target)
    keys = get_registry().patient_keys(list(await session.akeys()))
    for key in keys:
        del session[key]  # loaded above: no I/O here
    cleanup = _result(target, action, reason, source, actor, keys)
    if keys:
        # One trip to the sync world: the session and its audit row, one transaction.
        persisted = await sync_to_async(_persist)(session, lambda: cleanup, bump=bump)
        return None if persisted is None else (cleanup, True)
    if action == CleanupEvent.Action.END_SESSION and await _agone(session):
        return None
    return cleanup, False


def _signed_out(target: Any) -> None:
    """Both views of the user anonymous once logged out. Django 5.2's ``logout``/``alogout``
    reset ``request.user`` only, and ``request.auser()`` keeps answering the user they loaded
    for their signal (Django 6 resets both)."""
    from django.contrib.auth.models import AnonymousUser

    anonymous = AnonymousUser()

    async def auser() -> AnonymousUser:
        return anonymous

    target.user = anonymous
    target.auser = auser


def _log_out(target: Any) -> None:
    if isinstance(target, SessionBase):
        target.flush()
        return
    setattr(target, ACTIVE_FLAG, True)
    try:
        logout(target)
    finally:
        setattr(target, ACTIVE_FLAG, False)
    _signed_out(target)


async def _alog_out(target: Any) -> None:
    if isinstance(target, SessionBase):
        await target.aflush()
        return
    setattr(target, ACTIVE_FLAG, True)
    try:
        await alogout(target)
    finally:
        setattr(target, ACTIVE_FLAG, False)
    _signed_out(target)


def _ended_already(target: Any) -> None:
    if not isinstance(target, SessionBase):
        setattr(target, LOGOUT_RECORDED_FLAG, True)
    logger.info(
        "A request of an ended session was logged out (%s).",
        session_ref(_session_of(target).session_key),
    )


def log_out_ended(target: Any) -> None:
    """Log out a request whose session was ended (and recorded) already: a no-op for the
    audit, so two tabs, or a replayed older cookie, never record an end twice."""
    _ended_already(target)
    _log_out(target)


async def alog_out_ended(target: Any) -> None:
    """Async twin of :func:`log_out_ended`."""
    _ended_already(target)
    await _alog_out(target)


def _announce(cleanup: Cleanup, held_login: bool, *, recorded: bool = False) -> None:
    if not recorded and _ends_something(cleanup, held_login):
        audit.record(cleanup)
    if patient_session_cleared.has_listeners(Cleanup):  # else no asdict (a deep copy)
        patient_session_cleared.send(sender=Cleanup, **asdict(cleanup))
    events.publish(cleanup.as_event())
    logger.debug("Cleanup %s/%s: %d items.", cleanup.reason, cleanup.source, cleanup.items_cleared)


async def _aannounce(cleanup: Cleanup, held_login: bool, *, recorded: bool = False) -> None:
    if not recorded and _ends_something(cleanup, held_login):
        await audit.arecord(cleanup)
    if patient_session_cleared.has_listeners(Cleanup):
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
    stale_copy: bool = False,
) -> int:
    """Remove every registered patient key from the session; returns how many were removed.

    ``stale_copy``: the session is an older copy whose data is void already (a replayed
    cookie): cleaning it does not start a new generation, so the current copy stays valid.
    A session that was ended meanwhile by another request is logged out, without a record.
    """
    cleared = _clear(target, action, reason, source, actor, bump=not stale_copy)
    if cleared is None:
        log_out_ended(target)
        return 0
    cleanup, recorded = cleared
    _announce(cleanup, SESSION_KEY in _session_of(target), recorded=recorded)
    return _finish(target, cleanup)


async def aclear_patient_session_data(
    target: Any,
    *,
    reason: str = "manual_cleanup",
    source: str = "api",
    actor: Any = None,
    action: str = CleanupEvent.Action.CLEAR_PATIENT_DATA,
    stale_copy: bool = False,
) -> int:
    """Async twin of :func:`clear_patient_session_data`."""
    cleared = await _aclear(target, action, reason, source, actor, bump=not stale_copy)
    if cleared is None:
        await alog_out_ended(target)
        return 0
    cleanup, recorded = cleared
    held_login = await _session_of(target).ahas_key(SESSION_KEY)
    await _aannounce(cleanup, held_login, recorded=recorded)
    return _finish(target, cleanup)


def end_session(target: Any, *, reason: str, source: str, actor: Any = None) -> int:
    """Clear the patient data, then end the whole session (logging the user out).

    Ending a session that another request ended already logs this request out and records
    nothing (two tabs after the idle limit: no second record, no error).
    """
    cleared = _clear(target, CleanupEvent.Action.END_SESSION, reason, source, actor)
    if cleared is None:
        log_out_ended(target)
        return 0
    cleanup, recorded = cleared
    _announce(cleanup, SESSION_KEY in _session_of(target), recorded=recorded)
    _log_out(target)
    return _finish(target, cleanup)


async def aend_session(target: Any, *, reason: str, source: str, actor: Any = None) -> int:
    """Async twin of :func:`end_session`."""
    cleared = await _aclear(target, CleanupEvent.Action.END_SESSION, reason, source, actor)
    if cleared is None:
        await alog_out_ended(target)
        return 0
    cleanup, recorded = cleared
    held_login = await _session_of(target).ahas_key(SESSION_KEY)
    await _aannounce(cleanup, held_login, recorded=recorded)
    await _alog_out(target)
    return _finish(target, cleanup)


async def avoid_client_session(
    meta_ref: str,
    session_ref: str,
    keys: tuple[str, ...],
    items: int,
    *,
    reason: str,
    source: str,
    actor: Any = None,
    end: bool = False,
) -> int:
    """Clear a client-side session the server cannot load (it lives in a cookie): a new
    generation voids its patient data when the cookie next comes in; announced as usual.

    With ``end``, the session's ref is revoked as well (``patient_data.revocation``): the
    cookie, and every older copy of it, is logged out at its next request.
    """
    if end:
        await revocation.arevoke(meta_ref)
    else:
        await sync_to_async(guard.bump)(meta_ref)
    cleanup = Cleanup(
        CleanupEvent.Action.END_SESSION if end else CleanupEvent.Action.CLEAR_PATIENT_DATA,
        reason,
        source,
        items,
        keys,
        session_ref,
        _actor_id(None, actor),
    )
    await _aannounce(cleanup, held_login=end)
    return items


def _lost(
    target: Any, before: dict[str, Any], reason: str, source: str, session_key: str | None
) -> Cleanup:
    keys = get_registry().patient_keys(before)
    cleanup = _result(target, CleanupEvent.Action.END_SESSION, reason, source, None, keys)
    if session_key is not None:  # the key it had: the event reaches that session's sockets
        cleanup = replace(cleanup, session_ref=session_ref(session_key))
    return cleanup


def record_lost(
    target: Any,
    before: dict[str, Any],
    *,
    reason: str,
    source: str,
    session_key: str | None = None,
) -> int:
    """Record a session that was flushed by other code; ``before`` is its earlier content and
    ``session_key`` the key it had, when it had another than the session's key now."""
    cleanup = _lost(target, before, reason, source, session_key)
    _announce(cleanup, SESSION_KEY in before)
    return cleanup.items_cleared


async def arecord_lost(
    target: Any,
    before: dict[str, Any],
    *,
    reason: str,
    source: str,
    session_key: str | None = None,
) -> int:
    """Async twin of :func:`record_lost`."""
    cleanup = _lost(target, before, reason, source, session_key)
    await _aannounce(cleanup, SESSION_KEY in before)
    return cleanup.items_cleared


def on_user_logged_out(sender: Any, request: Any = None, user: Any = None, **kwargs: Any) -> None:
    """``user_logged_out`` receiver: a logout clears and records the patient data."""
    if request is None or getattr(request, ACTIVE_FLAG, False):
        return
    if getattr(request, LOGOUT_RECORDED_FLAG, False):
        return  # this request's end is recorded already (e.g. ended by the middleware)
    cleared = _clear(request, CleanupEvent.Action.END_SESSION, "logout", "logout", user)
    if cleared is not None:  # None: ended meanwhile by another request, recorded there
        cleanup, recorded = cleared
        _announce(cleanup, SESSION_KEY in request.session, recorded=recorded)
        _finish(request, cleanup)


__all__ = [
    "Cleanup",
    "aclear_patient_session_data",
    "aend_session",
    "alog_out_ended",
    "avoid_client_session",
    "clear_patient_session_data",
    "end_session",
    "log_out_ended",
    "record_lost",
]
