"""What the next page tells the clinician about a cleanup they did not watch happen.

A logout, an emergency cleanup or a timeout found on the next request leaves a short notice
cookie: a reason code and a time, never a patient value or a session key. The next portal page
says what happened and why ("Signed out: emergency cleanup at 14:02 UTC") and drops the
cookie. The page's script shows the same sentences for cleanups it learns of while open.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from patient_data.conf import conf

COOKIE = "patient_notice"
#: Set on a request whose cleanup took place (by ``patient_data.cleanup``).
LAST_CLEANUP_ATTR = "_patient_last_cleanup"
SHOWN_ATTR = "_patient_notice_shown"
#: A notice not shown within this many seconds is stale and dropped.
MAX_AGE = 600
_VALUE = re.compile(r"^([a-z_]{1,40})\.(\d{1,12})$")


def _duration(minutes: float) -> str:
    seconds = round(minutes * 60)
    if seconds % 3600 == 0:
        hours = seconds // 3600
        return f"{hours} hour{'s' if hours != 1 else ''}"
    if seconds % 60 == 0:
        whole = seconds // 60
        return f"{whole} minute{'s' if whole != 1 else ''}"
    return f"{seconds} seconds"


def reason_texts() -> dict[str, str]:
    """Each cleanup reason as the sentence a clinician reads (the page's script uses them too)."""
    return {
        "logout": "Signed out",
        "emergency_cleanup": "Signed out: emergency cleanup",
        "session_max_inactive": "Signed out after "
        f"{_duration(conf.PATIENT_MAX_INACTIVE_TIME)} of inactivity",
        "patient_session_timeout": "Patient data cleared after "
        f"{_duration(conf.PATIENT_SESSION_TIMEOUT)} of inactivity",
        "patient_session_max_age": "Patient data cleared: it was held for the maximum of "
        f"{_duration(conf.PATIENT_SESSION_MAX_AGE)}",
        "unauthenticated_session": "Patient data cleared: the session was no longer signed in",
        "patient_data_epoch_advanced": "Patient data cleared: the server was restarted",
        "concurrent_cleanup": "Patient data cleared by an earlier cleanup",
        "manual_cleanup": "Patient data cleared on request",
        "tab_hidden": "Patient data cleared: the portal tab stayed hidden too long",
        "browser_closed": "Patient data cleared: every portal tab was closed",
    }


#: Reasons a clinician may not have seen happen: the next page reports them.
AFTER_THE_FACT = frozenset(reason_texts()) - {"manual_cleanup", "concurrent_cleanup"}


def _sentence(reason: str, at: float) -> str:
    clock = datetime.fromtimestamp(at, tz=timezone.utc).strftime("%H:%M UTC")
    return f"{reason_texts()[reason]} at {clock}."


def for_page(request: HttpRequest) -> str | None:
    """The notice the page being rendered shows (and then owns), if any."""
    cleanup = getattr(request, LAST_CLEANUP_ATTR, None)
    if cleanup is not None and cleanup.reason in AFTER_THE_FACT:
        reason, at = cleanup.reason, time.time()
    else:
        match = _VALUE.match(request.COOKIES.get(COOKIE, ""))
        if not match or match[1] not in AFTER_THE_FACT:
            return None
        reason, at = match[1], float(match[2])
        if not 0 <= time.time() - at <= MAX_AGE:
            return None
    setattr(request, SHOWN_ATTR, True)
    return _sentence(reason, at)


def attach(request: HttpRequest, response: HttpResponse) -> None:
    """Leave the notice for the next page, or drop the one this page has shown."""
    cleanup: Any = getattr(request, LAST_CLEANUP_ATTR, None)
    if getattr(request, SHOWN_ATTR, False):
        if COOKIE in request.COOKIES:
            response.delete_cookie(COOKIE, samesite="Lax")
    elif cleanup is not None and cleanup.reason in AFTER_THE_FACT:
        response.set_cookie(
            COOKIE,
            f"{cleanup.reason}.{int(time.time())}",
            max_age=MAX_AGE,
            samesite="Lax",
            secure=settings.SESSION_COOKIE_SECURE,
        )
