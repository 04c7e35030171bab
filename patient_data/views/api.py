"""The cleanup HTTP API. CSRF is enforced: another site cannot clear or log anyone out.

Every response is JSON; errors carry a stable ``error`` code, never exception text.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import wraps

from django.db import OperationalError
from django.http import HttpRequest, JsonResponse
from django.views.csrf import csrf_failure as django_csrf_failure

from patient_data import cleanup, events, ratelimit, site_data
from patient_data import meta as session_meta
from patient_data.conf import conf
from patient_data.decorators import passive_activity
from patient_data.middleware.patient_session_security import astamp_activity
from patient_data.models import ClientHint
from patient_data.refs import session_ref
from patient_data.registry import get_registry

logger = logging.getLogger("patient_data.middleware.patient_session_security")


API_PREFIX = "/api/"


def is_api(request: HttpRequest) -> bool:
    """Under the JSON API: every answer there is JSON with a stable code."""
    return request.path.startswith(API_PREFIX)


#: Reasons a page may give for clearing its own session's patient data.
PAGE_REASONS = frozenset({"manual_cleanup", "tab_hidden"})


def error(code: str, status: int, message: str) -> JsonResponse:
    return JsonResponse({"success": False, "error": code, "message": message}, status=status)


#: Seconds a client is asked to wait when the database is out of reach for a moment.
RETRY_AFTER_UNAVAILABLE = 2


def database_unavailable(exc: BaseException | None) -> bool:
    """A failure of the database's availability, not of the request: no connection free in
    the pool within its timeout, the server refusing connections (``too many clients``), a
    lost connection, a lock or serialisation timeout. Worth a retry: HTTP 503."""
    return isinstance(exc, OperationalError)


def service_unavailable() -> JsonResponse:
    response = error("service_unavailable", 503, "The service is busy. Try again in a moment.")
    response["Retry-After"] = str(RETRY_AFTER_UNAVAILABLE)
    return response


def json_method(*methods: str) -> Callable:
    """Only ``methods``; anything else gets a JSON 405 with an Allow header."""

    def decorator(view):
        @wraps(view)
        async def wrapper(request: HttpRequest, *args, **kwargs):
            if request.method not in methods:
                response = error(
                    "method_not_allowed", 405, f"Use {' or '.join(methods)} for this endpoint."
                )
                response["Allow"] = ", ".join(methods)
                return response
            try:
                return await view(request, *args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - answered with a stable code
                # The type only: an exception's text may quote session content.
                if database_unavailable(exc):
                    logger.warning(
                        "Cleanup request deferred: database unavailable (%s).",
                        type(exc).__name__,
                    )
                    return service_unavailable()
                logger.error(
                    "Cleanup request failed (%s) for session %s.",
                    type(exc).__name__,
                    session_ref(request.session.session_key),
                )
                return error("cleanup_failed", 500, "The cleanup could not be completed.")

        return wrapper

    return decorator


async def _username(request: HttpRequest) -> str:
    user = await request.auser()
    return user.get_username() if user.is_authenticated else "anonymous"


def rate_limited(endpoint: str) -> Callable:
    """A JSON 429 with Retry-After once the session or the client address is over its limit.

    A session that holds patient data is always served, and not counted: the limit guards the
    server's work (and the audit trail) against requests with nothing to clear, never the
    removal of the data (nor a colleague's at the same address). Such a request costs no
    round trip to the counters.
    """

    def decorator(view):
        @wraps(view)
        async def wrapper(request: HttpRequest, *args, **kwargs):
            holds = get_registry().patient_keys(list(await request.session.akeys()))
            if not holds and await ratelimit.aexceeded(request, endpoint):
                logger.warning(
                    "Cleanup request refused by the rate limit (%s) for session %s.",
                    endpoint,
                    session_ref(request.session.session_key),
                )
                response = error("rate_limited", 429, "Too many cleanup requests. Wait a moment.")
                response["Retry-After"] = str(ratelimit.retry_after())
                return response
            return await view(request, *args, **kwargs)

        return wrapper

    return decorator


def _note_client_hint(request: HttpRequest) -> None:
    """Keep the trigger the client claims, if it is one of the known ones: a claim, recorded
    as such, never the audit source (which the server decides)."""
    claimed = request.headers.get("X-Cleanup-Trigger", "").strip().lower()
    if claimed in ClientHint.values:
        setattr(request, cleanup.CLIENT_HINT_ATTR, claimed)


@json_method("POST")
@rate_limited("clear")
async def clear_patient_session(request: HttpRequest) -> JsonResponse:
    """Clear the patient data of the caller's session.

    ``X-Cleanup-Reason`` may name one of ``PAGE_REASONS`` (the page's own timers); anything
    else is refused before anything is cleared.
    """
    reason = request.headers.get("X-Cleanup-Reason", "manual_cleanup")
    if reason not in PAGE_REASONS:
        return error("bad_reason", 400, f"X-Cleanup-Reason must be one of {sorted(PAGE_REASONS)}.")
    _note_client_hint(request)
    # The click is activity: stamped before the cleanup, the cleanup's own write carries it,
    # and the middleware finds nothing left to write after the view (no second save).
    seen = await astamp_activity(request)
    async with events.together():  # the activity rides in the cleared event
        items = await cleanup.aclear_patient_session_data(
            request, reason=reason, source="api", actor=await request.auser()
        )
        if seen is not None:
            await events.apublish_activity(request.session.session_key, seen, items=0)
    logger.info(
        "Manual patient session cleanup requested by user %s: %d items cleared",
        await _username(request),
        items,
    )
    response = JsonResponse({"success": True, "items_cleared": items})
    return site_data.add(response, site_data.PATIENT_DATA)


@json_method("POST")
@rate_limited("emergency")
async def emergency_session_cleanup(request: HttpRequest) -> JsonResponse:
    """End the caller's whole session (patient data and login)."""
    _note_client_hint(request)
    username = await _username(request)
    items = await cleanup.aend_session(
        request, reason="emergency_cleanup", source="api", actor=await request.auser()
    )
    logger.warning(
        "Emergency session cleanup requested by user %s: %d patient data items cleared",
        username,
        items,
    )
    response = JsonResponse({"success": True, "items_cleared": items})
    return site_data.add(response, site_data.WHOLE_SESSION)


@passive_activity
@json_method("GET")
async def session_status(request: HttpRequest) -> JsonResponse:
    """Passive status for the browser widget: never extends the idle timer."""
    data = dict(await request.session.aitems())
    keys = get_registry().patient_keys(data)
    info = session_meta.read(data)
    user = await request.auser()
    now = time.time()
    seen = info.get("seen")
    idle = now - seen if seen is not None else 0.0
    body = {
        "authenticated": user.is_authenticated,
        "has_patient_data": bool(keys),
        "items": len(keys),
        "keys": get_registry().entries(keys),
        "idle_seconds": round(idle, 1),
        "timeout_seconds": conf.PATIENT_SESSION_TIMEOUT * 60,
        "max_inactive_seconds": conf.PATIENT_MAX_INACTIVE_TIME * 60,
        "seconds_until_timeout": _seconds_left(info, now, idle) if keys else None,
    }
    return JsonResponse(body)


def _seconds_left(info: dict, now: float, idle: float) -> float:
    """Until the first of the idle timeout and the absolute lifetime clears the data."""
    left = conf.PATIENT_SESSION_TIMEOUT * 60 - idle
    since = info.get("since")
    if since is not None:
        left = min(left, conf.PATIENT_SESSION_MAX_AGE * 60 - (now - since))
    return max(0.0, round(left, 1))


def csrf_failure(request: HttpRequest, reason: str = ""):
    """JSON for the API (stable code, no internals), Django's page elsewhere."""
    if is_api(request):
        return error("csrf_failed", 403, "CSRF verification failed. Reload the page.")
    return django_csrf_failure(request, reason=reason)
