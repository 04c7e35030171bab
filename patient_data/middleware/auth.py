"""Django's ``AuthenticationMiddleware`` with one user load per request.

Django gives a request two independent caches: ``request.user`` (a lazy object over
``auth.get_user``, kept in ``_cached_user``) and ``request.auser()`` (``auth.aget_user``, kept
in ``_acached_user``). Whichever of them a request uses second reads ``auth_user`` again: the
sync middleware path asks ``request.user`` and an async view's ``login_required`` then asks
``request.auser()``; under ASGI the patient middleware asks ``auser()`` and a sync view or
template then evaluates ``request.user``. Here both read one cache, so the user is loaded once,
by whichever asks first. ``login``/``logout`` replace both attributes, as with Django's.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from django.contrib import auth
from django.contrib.auth.middleware import (
    AuthenticationMiddleware as DjangoAuthenticationMiddleware,
)
from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

#: Request attribute holding the user once it is loaded.
USER_ATTR = "_patient_data_user"


def get_user(request: HttpRequest) -> Any:
    try:
        return getattr(request, USER_ATTR)
    except AttributeError:
        user = auth.get_user(request)
        setattr(request, USER_ATTR, user)
        return user


async def aget_user(request: HttpRequest) -> Any:
    try:
        return getattr(request, USER_ATTR)
    except AttributeError:
        user = await auth.aget_user(request)
        setattr(request, USER_ATTR, user)
        return user


class AuthenticationMiddleware(DjangoAuthenticationMiddleware):
    """``request.user`` and ``request.auser()`` share one load."""

    def process_request(self, request: HttpRequest) -> None:
        super().process_request(request)  # Django's own check that sessions come first
        request.user = SimpleLazyObject(partial(get_user, request))
        request.auser = partial(aget_user, request)
