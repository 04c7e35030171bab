"""Which stored sessions a bulk run cleans, and why: a pure decision per session.

The time rules (idle timeout, absolute lifetime, maximum inactivity) are the middleware's own
(``patient_data.policy.judge``); this module adds the command options and the facts only a
bulk run has (expiry dates, the user rows of many sessions at once).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.core.exceptions import ValidationError

from patient_data import meta as session_meta
from patient_data import policy

CLEAR = "clear"
DELETE = "delete"

# Stable audit reasons written by the bulk commands.
BULK_CLEANUP = "bulk_cleanup"
STARTUP_CLEANUP = "startup_cleanup"
EXPIRED_SESSION = "expired_session"
UNAUTHENTICATED_SESSION = "unauthenticated_session"
UNDECODABLE_SESSION = "undecodable_session"
EPOCH_ADVANCED = "epoch_advanced"


@dataclass(frozen=True)
class Decision:
    action: str
    reason: str


@dataclass(frozen=True)
class Selection:
    """The options of one run. ``include_authenticated``: also sessions with a valid user
    and fresh activity (the cleanup command by default, the start-up one with --all-sessions).
    """

    include_authenticated: bool = True
    unauthenticated_only: bool = False
    expired_only: bool = False
    older_than_seconds: float | None = None
    fallback_reason: str = BULK_CLEANUP

    def decide(
        self, data: dict[str, Any], *, expired: bool, user_ok: bool, now: float, mtime: float | None
    ) -> Decision | None:
        """What to do with a session holding patient data (None: leave it untouched).

        Expired sessions are removed (Django would not load them any more); live ones only
        lose their patient data, so no user's request is interrupted.
        """
        info = session_meta.read(data)
        if self.older_than_seconds is not None:
            last = info.get("seen") or info.get("since") or mtime
            if last is not None and now - last < self.older_than_seconds:
                return None
        timed_out = self._timed_out(data, info, now)
        if expired:
            timed_out = Decision(DELETE, EXPIRED_SESSION)
        if self.unauthenticated_only and user_ok:
            return None
        if self.expired_only and timed_out is None:
            return None
        if timed_out is not None:
            return timed_out
        if not user_ok:
            return Decision(CLEAR, UNAUTHENTICATED_SESSION)
        return Decision(CLEAR, self.fallback_reason) if self.include_authenticated else None

    @staticmethod
    def _timed_out(data: dict[str, Any], info: dict[str, Any], now: float) -> Decision | None:
        # Only the time rules: the user is judged here, epochs and generations are not
        # reasons to touch a stored session.
        facts = policy.Facts(
            now=now, meta=info, has_patient_data=True, claims_auth=SESSION_KEY in data
        )
        verdict = policy.judge(facts)
        return None if verdict.action == policy.KEEP else Decision(CLEAR, verdict.reason)


class Users:
    """Whether a session still has an authenticated, existing, active user (as Django's
    ``get_user`` would decide), with the user rows of a whole page loaded in one query."""

    def __init__(self) -> None:
        self.model = get_user_model()
        self.backends = set(settings.AUTHENTICATION_BACKENDS)
        self._hashes: dict[str, frozenset[str]] = {}

    def load(self, sessions: Iterable[dict[str, Any]]) -> None:
        """Load the users of ``sessions`` (forgetting the previous page's: constant memory)."""
        ids = {str(data[SESSION_KEY]) for data in sessions if SESSION_KEY in data}
        self._hashes = {}
        pks = []
        for user_id in ids:
            try:
                pks.append(self.model._meta.pk.to_python(user_id))
            except ValidationError:
                continue
        for user in self.model._default_manager.filter(pk__in=pks):
            if getattr(user, "is_active", True):
                hashes = {user.get_session_auth_hash(), *user.get_session_auth_fallback_hash()}
                self._hashes[str(user.pk)] = frozenset(hashes)

    def ok(self, data: dict[str, Any]) -> bool:
        user_id = data.get(SESSION_KEY)
        if user_id is None or data.get(BACKEND_SESSION_KEY) not in self.backends:
            return False
        if str(user_id) not in self._hashes:
            return False
        return data.get(HASH_SESSION_KEY) in self._hashes[str(user_id)]
