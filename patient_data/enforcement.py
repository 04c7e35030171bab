"""Apply the policy to one session: gather the facts, judge, and call the cleanup service.

The middleware calls this before every view; the live side calls it for an open socket, so a
timeout is enforced (and pushed to the page) without waiting for the next request. ``target``
is a request, or anything with ``.session`` (and ``.user`` / ``.auser()``) that
``patient_data.cleanup`` accepts.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

from django.contrib.auth import SESSION_KEY

from patient_data import cleanup, epoch, guard, policy, revocation
from patient_data import meta as session_meta
from patient_data.refs import session_ref
from patient_data.registry import get_registry

logger = logging.getLogger("patient_data.middleware.patient_session_security")


def facts(data: dict[str, Any], now: float) -> policy.Facts:
    """What a session's blob says for the policy (the rest is gathered when judging); the
    live side's timers ask the same for their deadlines."""
    return policy.Facts(
        now=now,
        meta=session_meta.read(data),
        has_patient_data=bool(get_registry().patient_keys(data)),
        claims_auth=SESSION_KEY in data,
    )


def _user_ok(user: Any) -> bool:
    return bool(user.is_authenticated and user.is_active)


def _verified_ref(session: Any, found: policy.Facts) -> str | None:
    """The ref to look up on the way in, for stores where an older copy can come back by
    itself (see GuardedSessionMixin.verify_generation_on_load); every guarded store is
    checked at save time as well."""
    if not getattr(session, "verify_generation_on_load", False):
        return None
    if not (found.claims_auth or found.has_patient_data):
        return None
    return found.meta.get("ref")


#: A copy whose patient data is void already: cleaning it starts no new generation.
STALE_COPY = "concurrent_cleanup"
ENDED = "session_ended"


def _log(target: Any, verdict: policy.Verdict, items: int) -> None:
    if verdict.reason == "unauthenticated_session":
        logger.warning(
            "Cleared patient data from unauthenticated session: %s",
            session_ref(target.session.session_key),
        )
    logger.info(
        "Patient session security cleanup triggered by: %s. Cleared %d patient data items.",
        verdict.reason,
        items,
    )


def _flushed_meanwhile(found: policy.Facts, data_now: dict[str, Any]) -> bool:
    """Django's own user lookup flushed the session while the facts were gathered (its
    authentication hash no longer verifies: the password was changed elsewhere): the
    patient data is gone already, and its loss still has to be recorded and announced."""
    return found.has_patient_data and not get_registry().patient_keys(data_now)


def enforce(target: Any, source: str = "middleware") -> policy.Verdict:
    """Judge the session of ``target`` now and carry the verdict out (sync)."""
    session = target.session
    key, data = session.session_key, dict(session.items())
    found = facts(data, time.time())
    ref = _verified_ref(session, found)
    if ref:
        found = replace(found, ended=revocation.is_ended(ref))
    if found.has_patient_data and not found.ended:
        found = replace(
            found,
            user_ok=_user_ok(target.user),
            current_epoch=epoch.current(),
            stored_generation=guard.current_generation(ref) if ref else None,
        )
    verdict = policy.judge(found)
    if verdict.reason == ENDED:
        cleanup.log_out_ended(target)
    elif verdict.action != policy.KEEP and _flushed_meanwhile(found, dict(session.items())):
        lost = cleanup.record_lost(
            target, data, reason=verdict.reason, source=source, session_key=key
        )
        _log(target, verdict, lost)
    elif verdict.action == policy.END:
        _log(target, verdict, cleanup.end_session(target, reason=verdict.reason, source=source))
    elif verdict.action == policy.CLEAR:
        items = cleanup.clear_patient_session_data(
            target, reason=verdict.reason, source=source, stale_copy=verdict.reason == STALE_COPY
        )
        _log(target, verdict, items)
    return verdict


async def aenforce(target: Any, source: str = "middleware") -> policy.Verdict:
    """Async twin of :func:`enforce` (Django's async session and auth API only)."""
    session = target.session
    key, data = session.session_key, dict(await session.aitems())
    found = facts(data, time.time())
    ref = _verified_ref(session, found)
    if ref:
        found = replace(found, ended=await revocation.ais_ended(ref))
    if found.has_patient_data and not found.ended:
        found = replace(
            found,
            user_ok=_user_ok(await target.auser()),
            current_epoch=await epoch.acurrent(),
            stored_generation=await guard.acurrent_generation(ref) if ref else None,
        )
    verdict = policy.judge(found)
    if verdict.reason == ENDED:
        await cleanup.alog_out_ended(target)
    elif verdict.action != policy.KEEP and _flushed_meanwhile(found, dict(await session.aitems())):
        lost = await cleanup.arecord_lost(
            target, data, reason=verdict.reason, source=source, session_key=key
        )
        _log(target, verdict, lost)
    elif verdict.action == policy.END:
        items = await cleanup.aend_session(target, reason=verdict.reason, source=source)
        _log(target, verdict, items)
    elif verdict.action == policy.CLEAR:
        items = await cleanup.aclear_patient_session_data(
            target, reason=verdict.reason, source=source, stale_copy=verdict.reason == STALE_COPY
        )
        _log(target, verdict, items)
    return verdict
