"""User activity: the idle timers' clock, written at most once per interval.

A request records activity through the middleware (SessionMiddleware then saves once); a
socket message can record it the same way and save the session itself.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import SESSION_KEY

from patient_data import meta as session_meta
from patient_data import policy
from patient_data.registry import get_registry


def stamped(data: dict[str, Any], now: float) -> dict[str, Any] | None:
    """The bookkeeping with ``seen = now`` if a write is due for this session, else None.

    Only sessions worth timing out are stamped (authenticated, or holding patient data), so
    anonymous visitors never get a session from the timer alone.
    """
    if not data or not (SESSION_KEY in data or get_registry().patient_keys(data)):
        return None
    info = session_meta.read(data)
    if not policy.activity_due(info, now):
        return None
    info["seen"] = now
    if SESSION_KEY in data:
        # A login from before the absolute lifetime was recorded starts it now.
        info.setdefault("login", now)
    return info
