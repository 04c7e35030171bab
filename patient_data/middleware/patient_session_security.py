"""Middleware that enforces the patient-session policy on every request.

``PatientSessionSecurityMiddleware`` (after ``AuthenticationMiddleware``):

- before the view: ends idle sessions (``PATIENT_MAX_INACTIVE_TIME``), and clears patient data
  that is idle (``PATIENT_SESSION_TIMEOUT``), too old (``PATIENT_SESSION_MAX_AGE``), held by a
  session without an active user, or stamped with a void epoch or generation;
- after the view: records user activity (at most once per ``PATIENT_ACTIVITY_WRITE_INTERVAL``,
  never for passive requests; announced to the session's sockets, whose timers follow it) and
  adds the patient-page security headers.

``PatientSessionCleanupMiddleware`` makes sure a logout clears and records the patient data,
also when a logout view bypasses ``django.contrib.auth.logout``.

Both run sync or async; the async path uses Django's async session and auth API only.
The middleware never saves the session itself: SessionMiddleware writes it once.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.contrib.auth import SESSION_KEY
from django.http import HttpRequest, HttpResponse

from patient_data import (
    activity,
    cleanup,
    enforcement,
    events,
    notices,
    patient_session,
    policy,
    site_data,
)
from patient_data import meta as session_meta
from patient_data.conf import conf
from patient_data.decorators import PASSIVE_FLAG, PATIENT_PAGE_FLAG
from patient_data.registry import META_KEY, get_registry

logger = logging.getLogger(__name__)

PASSIVE_HEADER = "HTTP_X_PATIENT_ACTIVITY"
CLEARED_HEADER = "X-Patient-Session-Cleared"
VERDICT_ATTR = "_patient_verdict"

PATIENT_PAGE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache, no-store, must-revalidate",
    "Pragma": "no-cache",
    "Expires": "0",
    "X-Patient-Data-Page": "true",
    "Referrer-Policy": "same-origin",
}


def _is_passive(request: HttpRequest) -> bool:
    if getattr(request, PASSIVE_FLAG, False):
        return True
    if request.META.get(PASSIVE_HEADER, "").lower() == "passive":
        return True
    return request.path.startswith(conf.PATIENT_PASSIVE_PATH_PREFIXES)


def add_patient_page_headers(response: HttpResponse) -> None:
    for name, value in PATIENT_PAGE_HEADERS.items():
        response[name] = value
    csp = response.get("Content-Security-Policy", "")
    if "frame-ancestors" not in csp:
        csp = f"{csp.rstrip('; ')}; frame-ancestors 'none'" if csp else "frame-ancestors 'none'"
        response["Content-Security-Policy"] = csp


def _finish(request: HttpRequest, response: HttpResponse, data: dict[str, Any]) -> None:
    """Patient-page headers, and the cleared-reason header for the page's script."""
    if get_registry().patient_keys(data) or getattr(request, PATIENT_PAGE_FLAG, False):
        add_patient_page_headers(response)
    verdict = getattr(request, VERDICT_ATTR, None)
    if verdict is not None and verdict.action != policy.KEEP:
        response[CLEARED_HEADER] = verdict.reason
        site_data.add(response)
    notices.attach(request, response)


def _username(user: Any) -> str:
    return user.get_username() if user.is_authenticated else ""


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
        setattr(request, VERDICT_ATTR, enforcement.enforce(request))
        response = self.get_response(request)
        data = dict(request.session.items())
        _finish(request, response, data)
        if getattr(request.session, patient_session.STORED_FLAG, False):
            events.publish_stored(request.session.session_key, _username(request.user), data)
        if not _is_passive(request) and (info := activity.stamped(data, time.time())):
            request.session[META_KEY] = info
            items = len(get_registry().patient_keys(data))
            events.publish_activity(request.session.session_key, info["seen"], items)
        return response

    async def __acall__(self, request: HttpRequest):
        setattr(request, VERDICT_ATTR, await enforcement.aenforce(request))
        response = await self.get_response(request)
        data = dict(await request.session.aitems())
        _finish(request, response, data)
        if getattr(request.session, patient_session.STORED_FLAG, False):
            user = _username(await request.auser())
            await events.apublish_stored(request.session.session_key, user, data)
        if (seen := await astamp_activity(request, data)) is not None:
            items = len(get_registry().patient_keys(data))
            await events.apublish_activity(request.session.session_key, seen, items)
        return response


async def astamp_activity(request: HttpRequest, data: dict[str, Any] | None = None) -> float | None:
    """Stamp the request's activity in its session (in memory) when a write is due, never for
    a passive request; the time stamped, or None. The caller announces it once the session is
    written. ``data``: the session's items, when the caller has them."""
    if _is_passive(request):
        return None
    if data is None:
        data = dict(await request.session.aitems())
    info = activity.stamped(data, time.time())
    if info is None:
        return None
    await request.session.aset(META_KEY, info)
    return info["seen"]


class PatientSessionCleanupMiddleware(_Base):
    """Makes sure a request that logs its user out, or flushes the session, leaves no patient
    data behind and no cleanup unrecorded.

    ``django.contrib.auth.logout`` is handled by the ``user_logged_out`` receiver; this
    catches the rest: a view that drops the auth keys by hand (the data is cleared), and one
    that flushes the session, e.g. a login as another user (the loss is recorded).
    """

    def __call__(self, request: HttpRequest):
        if self.async_mode:
            return self.__acall__(request)
        before = dict(request.session.items())
        response = self.get_response(request)
        outcome = _unrecorded_end(request, before, dict(request.session.items()))
        if outcome == CLEAR_REST:
            cleanup.clear_patient_session_data(
                request, reason="logout", source="middleware", action=END_SESSION
            )
        elif outcome:
            cleanup.record_lost(request, before, reason=outcome, source="middleware")
        return _after_logout(request, response, outcome)

    async def __acall__(self, request: HttpRequest):
        before = dict(await request.session.aitems())
        response = await self.get_response(request)
        outcome = _unrecorded_end(request, before, dict(await request.session.aitems()))
        if outcome == CLEAR_REST:
            await cleanup.aclear_patient_session_data(
                request, reason="logout", source="middleware", action=END_SESSION
            )
        elif outcome:
            await cleanup.arecord_lost(request, before, reason=outcome, source="middleware")
        return _after_logout(request, response, outcome)


CLEAR_REST = "clear"
END_SESSION = "end_session"


def _after_logout(request: HttpRequest, response: HttpResponse, outcome: str | None):
    # Not for a flush by a login as someone else: that response carries the new session.
    if outcome in (CLEAR_REST, "logout") or getattr(request, cleanup.LOGOUT_RECORDED_FLAG, False):
        site_data.add(response)
    return response


def _unrecorded_end(request: HttpRequest, before: dict, after: dict) -> str | None:
    """What the cleanup middleware still has to do for this request, if anything."""
    if getattr(request, cleanup.LOGOUT_RECORDED_FLAG, False):
        return None
    registry = get_registry()
    lost_auth = SESSION_KEY in before and SESSION_KEY not in after
    if lost_auth and registry.patient_keys(after):
        return CLEAR_REST
    # A login as someone else flushes the session and stamps a new ref at once.
    ref = session_meta.read(before).get("ref")
    flushed = ref is not None and session_meta.read(after).get("ref") != ref
    if (lost_auth or flushed) and registry.patient_keys(before):
        return "logout" if lost_auth else "session_flushed"
    return None
