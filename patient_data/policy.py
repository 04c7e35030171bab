"""When a session's patient data (or the session itself) must go: a pure decision.

The middleware gathers the facts (with sync or async I/O) and asks :func:`judge`; keeping the
rules here means both middleware modes, and later the socket side, apply the same ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from patient_data.conf import conf

KEEP = "keep"
CLEAR = "clear"
END = "end"


@dataclass(frozen=True)
class Verdict:
    action: str
    reason: str = ""


KEEP_VERDICT = Verdict(KEEP)
END_MAX_INACTIVE = Verdict(END, "session_max_inactive")
CLEAR_IDLE = Verdict(CLEAR, "patient_session_timeout")
CLEAR_MAX_AGE = Verdict(CLEAR, "patient_session_max_age")


@dataclass(frozen=True)
class Facts:
    now: float
    meta: dict[str, Any]
    has_patient_data: bool
    claims_auth: bool
    user_ok: bool = True
    current_epoch: int = 0
    stored_generation: int | None = None


def judge(facts: Facts) -> Verdict:
    """The first rule that applies, most drastic first."""
    seen = facts.meta.get("seen")
    idle = facts.now - seen if seen is not None else 0.0
    if (
        facts.claims_auth or facts.has_patient_data
    ) and idle >= conf.PATIENT_MAX_INACTIVE_TIME * 60:
        return Verdict(END, "session_max_inactive")
    if not facts.has_patient_data:
        return KEEP_VERDICT
    if facts.meta.get("epoch", 0) < facts.current_epoch:
        return Verdict(CLEAR, "patient_data_epoch_advanced")
    if facts.stored_generation is not None and facts.meta.get("gen", 0) < facts.stored_generation:
        return Verdict(CLEAR, "concurrent_cleanup")
    if not facts.user_ok:
        return Verdict(CLEAR, "unauthenticated_session")
    if idle >= conf.PATIENT_SESSION_TIMEOUT * 60:
        return Verdict(CLEAR, "patient_session_timeout")
    since = facts.meta.get("since")
    if since is not None and facts.now - since >= conf.PATIENT_SESSION_MAX_AGE * 60:
        return Verdict(CLEAR, "patient_session_max_age")
    return KEEP_VERDICT


@dataclass(frozen=True)
class Deadline:
    """When :func:`judge` will give ``verdict`` for these facts if nothing happens before."""

    at: float
    verdict: Verdict


def deadlines(facts: Facts) -> list[Deadline]:
    """Every time rule of :func:`judge` as the moment it will apply, given no activity meanwhile
    (what a timer waits for: sockets and HTTP can then never disagree)."""
    found = []
    seen = facts.meta.get("seen")
    if seen is not None and (facts.claims_auth or facts.has_patient_data):
        found.append(Deadline(seen + conf.PATIENT_MAX_INACTIVE_TIME * 60, END_MAX_INACTIVE))
    if facts.has_patient_data:
        if seen is not None:
            found.append(Deadline(seen + conf.PATIENT_SESSION_TIMEOUT * 60, CLEAR_IDLE))
        since = facts.meta.get("since")
        if since is not None:
            found.append(Deadline(since + conf.PATIENT_SESSION_MAX_AGE * 60, CLEAR_MAX_AGE))
    return found


def next_deadline(facts: Facts) -> Deadline | None:
    """The first of :func:`deadlines`, or None when no time rule can apply."""
    return min(deadlines(facts), key=lambda deadline: deadline.at, default=None)


def activity_due(meta: dict[str, Any], now: float) -> bool:
    """Whether the activity stamp is old enough to be written again."""
    seen = meta.get("seen")
    return seen is None or now - seen >= conf.PATIENT_ACTIVITY_WRITE_INTERVAL
