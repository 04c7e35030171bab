"""The state frames: ``session.state`` for a session's sockets, ``sessions.snapshot`` for staff.

Counts, registry entry names and keyed refs only; never a value, never a session key.
"""

from __future__ import annotations

import time
from typing import Any

from django.contrib.auth import get_user_model

from monitor import presence, protocol
from patient_data import index, policy
from patient_data import meta as session_meta
from patient_data.conf import conf
from patient_data.enforcement import facts
from patient_data.registry import get_registry


def _left(at: float | None, now: float) -> float | None:
    return None if at is None else max(0.0, round(at - now, 1))


def countdowns(data: dict[str, Any], now: float) -> dict[str, float | None]:
    """Seconds left before each time rule of ``policy`` applies (None when it cannot)."""
    found = {deadline.verdict: deadline.at for deadline in policy.deadlines(facts(data, now))}
    return {
        "idle_seconds_left": _left(found.get(policy.CLEAR_IDLE), now),
        "absolute_seconds_left": _left(found.get(policy.CLEAR_MAX_AGE), now),
        "session_seconds_left": _left(found.get(policy.END_MAX_INACTIVE), now),
    }


def session_state(ref: str, data: dict[str, Any], open_tabs: int, **extra: Any) -> str:
    keys = get_registry().patient_keys(data)
    return protocol.frame(
        "session.state",
        session=ref,
        authenticated=True,
        has_patient_data=bool(keys),
        items=len(keys),
        keys=get_registry().entries(keys),
        **countdowns(data, time.time()),
        open_tabs=open_tabs,
        timeout_seconds=conf.PATIENT_SESSION_TIMEOUT * 60,
        warning_seconds=conf.PATIENT_TIMEOUT_WARNING,
        hidden_timeout_seconds=conf.PATIENT_HIDDEN_TIMEOUT,
        **extra,
    )


async def _usernames(user_ids: set[str]) -> dict[str, str]:
    users = get_user_model().objects.filter(pk__in=user_ids)
    return {str(pk): name async for pk, name in users.values_list("pk", "username")}


async def asessions() -> list[dict[str, Any]]:
    """Every indexed session holding patient data, as the dashboard shows it."""
    entries = await index.alist()
    names = await _usernames({entry.user_id for entry in entries if entry.user_id})
    now = time.time()
    sessions = []
    for entry in entries:
        session = None if entry.client_side else await index.aload(entry.session_ref)
        data = dict(await session.aitems()) if session is not None else {}
        if session is not None and not get_registry().patient_keys(data):
            continue  # left since it was indexed
        seen = session_meta.read(data).get("seen")
        sessions.append(
            {
                "session": entry.session_ref,
                "user": names.get(entry.user_id or "", None),
                "items": entry.items,
                "keys": list(entry.keys),
                "last_activity": seen,
                "idle_seconds_left": countdowns(data, now)["idle_seconds_left"],
                "open_tabs": await presence.acount(entry.session_ref),
            }
        )
    return sessions


async def asnapshot(**extra: Any) -> str:
    """The ``sessions.snapshot`` frame: the dashboard's rows."""
    return protocol.frame("sessions.snapshot", sessions=await asessions(), **extra)
