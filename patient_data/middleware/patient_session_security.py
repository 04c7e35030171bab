"""Middleware that enforces the patient-session policy on every request.

``PatientSessionSecurityMiddleware`` (after ``AuthenticationMiddleware``):

- before the view: ends idle sessions (``PATIENT_MAX_INACTIVE_TIME``), and clears patient data
  that is idle (``PATIENT_SESSION_TIMEOUT``), too old (``PATIENT_SESSION_MAX_AGE``), held by a
  session without an active user, or stamped with a void epoch or generation;
- after the view: records user activity (at most once per ``PATIENT_ACTIVITY_WRITE_INTERVAL``,
  never for passive requests) and adds the patient-page security headers.

``PatientSessionCleanupMiddleware`` makes sure a logout clears and records the patient data,
also when a logout view bypasses ``django.contrib.auth.logout``.

Both run sync or async; the async path uses Django's async session and auth API only.
The middleware never saves the session itself: SessionMiddleware writes it once.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.contrib.auth import SESSION_KEY
from django.http import HttpRequest, HttpResponse

from patient_data import cleanup, epoch, guard, policy
from patient_data import meta as session_meta
from patient_data.conf import conf
from patient_data.decorators import PASSIVE_FLAG, PATIENT_PAGE_FLAG
from patient_data.refs import session_ref
from patient_data.registry import META_KEY, get_registry

logger = logging.getLogger(__name__)

PASSIVE_HEADER = "HTTP_X_PATIENT_ACTIVITY"
CLEARED_HEADER = "X-Patient-Session-Cleared"

PATIENT_PAGE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache, no-store, must-revalidate",
    "Pragma": "no-cache",
    "Expires": "0",
    "X-Patient-Data-Page": "true",
    "Referrer-Policy": "no-referrer",
}


def _is_passive(request: HttpRequest) -> bool:
    if getattr(request, PASSIVE_FLAG, False):
        return True
    if request.META.get(PASSIVE_HEADER, "").lower() == "passive":
        return True
    return request.path.startswith(conf.PATIENT_PASSIVE_PATH_PREFIXES)


def _facts(request: HttpRequest, data: dict[str, Any], now: float) -> policy.Facts:
    return policy.Facts(
        now=now,
        meta=session_meta.read(data),
        has_patient_data=bool(get_registry().patient_keys(data)),
        claims_auth=SESSION_KEY in data,
    )


def _log_cleanup(request: HttpRequest, verdict: policy.Verdict, items: int) -> None:
    if verdict.reason == "unauthenticated_session":
        logger.warning(
            "Cleared patient data from unauthenticated session: %s",
            session_ref(request.session.session_key),
        )
    logger.info(
        "Patient session security cleanup triggered by: %s. Cleared %d patient data items.",
        verdict.reason,
        items,
    )


def add_patient_page_headers(response: HttpResponse) -> None:
    for name, value in PATIENT_PAGE_HEADERS.items():
        response[name] = value
    csp = response.get("Content-Security-Policy", "")
    if "frame-ancestors" not in csp:
        csp = f"{csp.rstrip('; ')}; frame-ancestors 'none'" if csp else "frame-ancestors 'none'"
        response["Content-Security-Policy"] = csp


def _finish(
    request: HttpRequest, response: HttpResponse, data: dict[str, Any], now: float
) -> dict[str, Any] | None:
    """Headers, and the bookkeeping to write back if activity is due (else None)."""
    has_patient = bool(get_registry().patient_keys(data))
    if has_patient or getattr(request, PATIENT_PAGE_FLAG, False):
        add_patient_page_headers(response)
    verdict = getattr(request, "_patient_verdict", None)
    if verdict is not None and verdict.action != policy.KEEP:
        response[CLEARED_HEADER] = verdict.reason
    if not data or _is_passive(request) or not (has_patient or SESSION_KEY in data):
        return None
    info = session_meta.read(data)
    if not policy.activity_due(info, now):
        return None
    info["seen"] = now
    return info


class _Base:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)


class PatientSessionSecurityMiddleware(_Base):
    """Timeouts, lost authentication, void epochs, activity and patient-page headers."""

    def __call__(self, request: HttpRequest):
        if self.async_mode:
            return self.__acall__(request)
        session = request.session
        now = time.time()
        data = dict(session.items())
        facts = _facts(request, data, now)
        if facts.has_patient_data:
            user = request.user
            facts = replace(
                facts,
                user_ok=bool(user.is_authenticated and user.is_active),
                current_epoch=epoch.current(),
                stored_generation=self._stored_generation(session, facts.meta),
            )
        verdict = policy.judge(facts)
        request._patient_verdict = verdict
        if verdict.action == policy.END:
            items = cleanup.end_session(request, reason=verdict.reason, source="middleware")
            _log_cleanup(request, verdict, items)
        elif verdict.action == policy.CLEAR:
            items = cleanup.clear_patient_session_data(
                request, reason=verdict.reason, source="middleware"
            )
            _log_cleanup(request, verdict, items)
        response = self.get_response(request)
        info = _finish(request, response, dict(session.items()), time.time())
        if info is not None:
            session[META_KEY] = info
        return response

    async def __acall__(self, request: HttpRequest):
        session = request.session
        now = time.time()
        data = dict(await session.aitems())
        facts = _facts(request, data, now)
        if facts.has_patient_data:
            user = await request.auser()
            facts = replace(
                facts,
                user_ok=bool(user.is_authenticated and user.is_active),
                current_epoch=await epoch.acurrent(),
                stored_generation=await self._astored_generation(session, facts.meta),
            )
        verdict = policy.judge(facts)
        request._patient_verdict = verdict
        if verdict.action == policy.END:
            items = await cleanup.aend_session(request, reason=verdict.reason, source="middleware")
            _log_cleanup(request, verdict, items)
        elif verdict.action == policy.CLEAR:
            items = await cleanup.aclear_patient_session_data(
                request, reason=verdict.reason, source="middleware"
            )
            _log_cleanup(request, verdict, items)
        response = await self.get_response(request)
        info = _finish(request, response, dict(await session.aitems()), time.time())
        if info is not None:
            await session.aset(META_KEY, info)
        return response

    @staticmethod
    def _stored_generation(session, info: dict[str, Any]) -> int | None:
        # Server-side stores are guarded at save time; a cookie can come back from a response
        # that was built before the cleanup, so it is checked on the way in as well.
        if getattr(session, "client_side", False) and info.get("ref"):
            return guard.current_generation(info["ref"])
        return None

    @staticmethod
    async def _astored_generation(session, info: dict[str, Any]) -> int | None:
        if getattr(session, "client_side", False) and info.get("ref"):
            return await guard.acurrent_generation(info["ref"])
        return None


class PatientSessionCleanupMiddleware(_Base):
    """Clears and records patient data when a request logs its user out.

    ``django.contrib.auth.logout`` is handled by the ``user_logged_out`` receiver; this
    catches the rest: a view that drops the auth keys or flushes the session by hand.
    """

    def __call__(self, request: HttpRequest):
        if self.async_mode:
            return self.__acall__(request)
        before = dict(request.session.items())
        response = self.get_response(request)
        self._after(request, before, dict(request.session.items()))
        return response

    async def __acall__(self, request: HttpRequest):
        before = dict(await request.session.aitems())
        response = await self.get_response(request)
        after = dict(await request.session.aitems())
        if self._logged_out(request, before, after):
            if get_registry().patient_keys(after):
                await cleanup.aclear_patient_session_data(
                    request, reason="logout", source="middleware", action="end_session"
                )
            else:
                await cleanup.arecord_lost(request, before, reason="logout", source="middleware")
        return response

    def _after(self, request: HttpRequest, before: dict, after: dict) -> None:
        if not self._logged_out(request, before, after):
            return
        if get_registry().patient_keys(after):
            cleanup.clear_patient_session_data(
                request, reason="logout", source="middleware", action="end_session"
            )
        else:
            cleanup.record_lost(request, before, reason="logout", source="middleware")

    @staticmethod
    def _logged_out(request: HttpRequest, before: dict, after: dict) -> bool:
        if getattr(request, cleanup.LOGOUT_RECORDED_FLAG, False):
            return False
        return SESSION_KEY in before and SESSION_KEY not in after
