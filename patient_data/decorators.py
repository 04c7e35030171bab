"""View markers read by PatientSessionSecurityMiddleware."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.contrib.auth.decorators import login_required as django_login_required
from django.contrib.auth.decorators import user_passes_test

#: Request attribute: this response shows patient data (security headers, no caching).
PATIENT_PAGE_FLAG = "_patient_data_page"
#: Request attribute: this request is not user activity (status polls, heartbeats).
PASSIVE_FLAG = "_patient_passive_request"


def _marking(flag: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        if iscoroutinefunction(view):

            @wraps(view)
            async def async_view(request, *args, **kwargs):
                setattr(request, flag, True)
                return await view(request, *args, **kwargs)

            return async_view

        @wraps(view)
        def sync_view(request, *args, **kwargs):
            setattr(request, flag, True)
            return view(request, *args, **kwargs)

        return sync_view

    return decorator


#: Mark a view whose pages show patient data even when the session holds none yet.
patient_data_page = _marking(PATIENT_PAGE_FLAG)
#: Mark a view whose requests must not extend the idle timer.
passive_activity = _marking(PASSIVE_FLAG)


async def _is_authenticated(user: Any) -> bool:
    return user.is_authenticated


def login_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """Django's ``login_required``; on a coroutine view the test runs in the event loop
    (Django runs its sync test of an async view through ``sync_to_async``: a thread hop)."""
    if iscoroutinefunction(view):
        return user_passes_test(_is_authenticated)(view)
    return django_login_required(view)
