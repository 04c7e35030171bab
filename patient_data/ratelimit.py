"""Rate limits of the cleanup endpoints, per session and per client address.

A fixed window counted in Django's cache (Redis in production, so every process shares the
counters). The limit never stands between a session and the removal of its patient data:
the API view lets a session that holds patient data through whatever the counters say. When
the cache is unreachable the limit is skipped (it protects the server's work, not the data).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from django.core.cache import cache
from django.http import HttpRequest

from patient_data.conf import conf
from patient_data.refs import address_ref, session_ref

logger = logging.getLogger("patient_data.ratelimit")


@dataclass(frozen=True)
class Limit:
    """One counter: a cache key and the most requests it allows per window."""

    key: str
    allowed: int


def limits(request: HttpRequest, endpoint: str) -> list[Limit]:
    """The counters one request to ``endpoint`` is charged to (keyed hashes, never raw keys)."""
    window = int(time.time() // conf.PATIENT_CLEANUP_RATE_WINDOW)
    prefix = f"patient_data:rate:{endpoint}:{window}"
    found = []
    per_session = conf.PATIENT_CLEANUP_RATE_PER_SESSION
    session_key = request.session.session_key
    if session_key and per_session:
        found.append(Limit(f"{prefix}:s:{session_ref(session_key)}", per_session))
    per_address = conf.PATIENT_CLEANUP_RATE_PER_ADDRESS
    if per_address:
        address = request.META.get("REMOTE_ADDR") or "unknown"
        found.append(Limit(f"{prefix}:a:{address_ref(address)}", per_address))
    return found


def retry_after() -> int:
    """Whole seconds until the current window ends."""
    window = conf.PATIENT_CLEANUP_RATE_WINDOW
    return max(1, math.ceil(window - time.time() % window))


async def aexceeded(request: HttpRequest, endpoint: str) -> bool:
    """Charge this request to its counters; True when one of them is over its limit."""
    over = False
    try:
        for limit in limits(request, endpoint):
            await cache.aadd(limit.key, 0, timeout=conf.PATIENT_CLEANUP_RATE_WINDOW + 1)
            over = await cache.aincr(limit.key) > limit.allowed or over
    except Exception as exc:  # noqa: BLE001 - any cache failure: serve, never refuse a cleanup
        logger.warning("Cleanup rate limit skipped: cache unavailable (%s).", type(exc).__name__)
        return False
    return over
