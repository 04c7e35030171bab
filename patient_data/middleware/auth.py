"""Django's ``AuthenticationMiddleware`` with one user load per request, in the session's hop.

Django gives a request two independent caches: ``request.user`` (a lazy object over
``auth.get_user``, kept in ``_cached_user``) and ``request.auser()`` (``auth.aget_user``, kept
in ``_acached_user``). Whichever of them a request uses second reads ``auth_user`` again: the
sync middleware path asks ``request.user`` and an async view's ``login_required`` then asks
``request.auser()``; under ASGI the patient middleware asks ``auser()`` and a sync view or
template then evaluates ``request.user``. Here both read one cache, so the user is loaded once,
by whichever asks first. ``login``/``logout`` replace both attributes, as with Django's.

Under ASGI the session row and the user row would each cost a thread hop (Django's async ORM
is ``sync_to_async`` around the sync one). So the user is read in the session's own load hop
(``GuardedSessionMixin.load_companions``): Django's ``auth.get_user`` runs there on a read-only
copy of the loaded session. Its answer is kept only when it asked for no session change (a
flush for a hash that no longer verifies, a key cycle for a fallback secret), and used only if
the session's auth keys are still what it read when ``request.user`` / ``auser()`` is first
asked; otherwise that first ask is Django's own call, side effects and all, at the same point
of the request as without this module.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from django.contrib import auth
from django.contrib.auth.middleware import (
    AuthenticationMiddleware as DjangoAuthenticationMiddleware,
)
from django.contrib.sessions.backends.base import SessionBase
from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from patient_data.rows import verified_user

#: Request attribute holding the user once it is loaded.
USER_ATTR = "_patient_data_user"
#: Request attribute holding (the auth keys it read, Django's answer) from the session's hop.
EARLY_ATTR = "_patient_data_early_user"
AUTH_KEYS = (auth.SESSION_KEY, auth.BACKEND_SESSION_KEY, auth.HASH_SESSION_KEY)


class _ReadOnlyCopy(SessionBase):
    """A loaded session's values for ``auth.get_user``; a change it asks for is only noted."""

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__()
        self._session_cache = dict(data)
        self.wants_change = False

    def _change(self, *args: Any, **kwargs: Any) -> None:
        self.wants_change = True

    create = save = delete = _change

    def exists(self, session_key: str) -> bool:
        return False

    def load(self) -> dict[str, Any]:
        return {}


def _early_user(request: HttpRequest, data: dict[str, Any]) -> None:
    """In the session's load hop: Django's answer for the loaded data, if it changes nothing."""
    copy = _ReadOnlyCopy(data)
    try:
        user = verified_user(_Request(copy))  # auth.get_user's answer, the row read cheaper
    except Exception:  # noqa: BLE001 - the real call raises it, where Django would
        return
    if not (copy.wants_change or copy.modified):
        setattr(request, EARLY_ATTR, (tuple(data.get(key) for key in AUTH_KEYS), user))


class _Request:
    """What ``auth.get_user`` reads of a request."""

    def __init__(self, session: SessionBase) -> None:
        self.session = session


def _early(request: HttpRequest, keys: tuple) -> tuple | None:
    """``(user,)`` from the session's hop, if the session's auth keys are still what it read."""
    early = getattr(request, EARLY_ATTR, None)
    return early[1:] if early is not None and early[0] == keys else None


def get_user(request: HttpRequest) -> Any:
    try:
        return getattr(request, USER_ATTR)
    except AttributeError:
        early = _early(request, tuple(request.session.get(key) for key in AUTH_KEYS))
        user = early[0] if early else verified_user(request)
        setattr(request, USER_ATTR, user)
        return user


async def aget_user(request: HttpRequest) -> Any:
    try:
        return getattr(request, USER_ATTR)
    except AttributeError:
        # The first read loads the session, and with it the user (see _early_user).
        early = _early(request, tuple([await request.session.aget(key) for key in AUTH_KEYS]))
        user = early[0] if early else await auth.aget_user(request)
        setattr(request, USER_ATTR, user)
        return user


class AuthenticationMiddleware(DjangoAuthenticationMiddleware):
    """``request.user`` and ``request.auser()`` share one load, read in the session's hop."""

    def process_request(self, request: HttpRequest) -> None:
        super().process_request(request)  # Django's own check that sessions come first
        request.user = SimpleLazyObject(partial(get_user, request))
        request.auser = partial(aget_user, request)
        session = request.session
        if hasattr(session, "load_companions"):
            # First: a prefetch's reader (patient_data.prefetch) may not need the user, but
            # every page does.
            session.load_companions = (partial(_early_user, request), *session.load_companions)
