"""Django's I/O-free middlewares, run in the event loop instead of through a thread hop.

Under ASGI, Django runs every hook of a ``MiddlewareMixin`` middleware through
``sync_to_async``: two hops per middleware and request (a thread switch each, and a new
thread per request for the first), though Security, Common, XFrame, Auth (lazy user), CSRF
with cookie storage and Messages with cookie storage do no I/O at all. :func:`inline` adapts
such a class without changing it: a subclass whose async ``__call__`` runs the class's own
``process_request``/``process_response`` inline. The sync mode, and every decision, stay
Django's.

CSRF's ``process_view`` runs inline too, for safe methods and for an unsafe one whose body
Django parses from memory (not ``multipart/form-data``, whose upload handlers may write files,
and of a declared length that Django keeps in memory): the token check is then pure
computation. A refusal's failure view (``CSRF_FAILURE_VIEW``, which may render templates or
read anything) still runs in a hop, as does the whole check of any other body. A form post or
an API call no longer waits for a thread to compare two tokens.

A configuration under which a hook would do I/O (``CSRF_USE_SESSIONS``, a message storage that
can fall back to the session) is refused by the system check ``patient_data.E060``; should it be
deployed anyway, the adapted class notices at start-up and keeps Django's hops.
"""

from __future__ import annotations

from collections.abc import Callable

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.messages.middleware import MessageMiddleware as DjangoMessageMiddleware
from django.contrib.messages.storage.cookie import CookieStorage
from django.http import HttpRequest, HttpResponseBase, HttpResponseForbidden
from django.middleware.clickjacking import XFrameOptionsMiddleware as DjangoXFrameMiddleware
from django.middleware.common import CommonMiddleware as DjangoCommonMiddleware
from django.middleware.csrf import CsrfViewMiddleware as DjangoCsrfViewMiddleware
from django.middleware.security import SecurityMiddleware as DjangoSecurityMiddleware
from django.utils.module_loading import import_string

from patient_data.middleware.auth import AuthenticationMiddleware as OneUserAuthentication

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})

#: Why the adapted class may not run inline under the current settings (None: it may).
Refusal = Callable[[], str | None]


def _never() -> str | None:
    return None


def inline(middleware: type, refusal: Refusal = _never) -> type:
    """A subclass of the ``MiddlewareMixin`` class ``middleware`` whose hooks run in the event
    loop in async mode, unless ``refusal()`` names a reason not to."""

    class Inline(middleware):
        adapts = f"{middleware.__module__}.{middleware.__qualname__}"
        inline_refusal = staticmethod(refusal)

        def __init__(self, get_response) -> None:
            super().__init__(get_response)
            self.runs_inline = self.async_mode and refusal() is None

        async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
            if not self.runs_inline:
                return await super().__acall__(request)
            response = None
            if hasattr(self, "process_request"):
                response = self.process_request(request)
            response = response or await self.get_response(request)
            if hasattr(self, "process_response"):
                response = self.process_response(request, response)
            return response

    Inline.__name__ = Inline.__qualname__ = middleware.__name__
    Inline.__doc__ = f"``{Inline.adapts}``, its hooks run inline in async mode."
    return Inline


def _csrf_refusal() -> str | None:
    if settings.CSRF_USE_SESSIONS:
        return "CSRF_USE_SESSIONS keeps the CSRF secret in the session (session I/O)"
    return None


def _messages_refusal() -> str | None:
    storage = import_string(settings.MESSAGE_STORAGE)
    if not issubclass(storage, CookieStorage):
        return f"MESSAGE_STORAGE {settings.MESSAGE_STORAGE!r} can read and write the session"
    return None


SecurityMiddleware = inline(DjangoSecurityMiddleware)
CommonMiddleware = inline(DjangoCommonMiddleware)


#: Set on a request whose CSRF check runs inline: a refusal is deferred to a hop.
_DEFER_REJECT_ATTR = "_ncp_csrf_defer_reject"


class _Refused(HttpResponseForbidden):
    """What the inline check returns instead of the failure view's answer (never sent)."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason


def body_parsed_in_memory(request: HttpRequest) -> bool:
    """Whether reading ``request.POST`` touches nothing but memory: not a multipart body (its
    upload handlers may write temporary files), and a declared length that Django keeps in
    memory (``FILE_UPLOAD_MAX_MEMORY_SIZE``; a longer body is spooled to disk)."""
    if request.content_type == "multipart/form-data":
        return False
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return False
    return 0 <= length <= settings.FILE_UPLOAD_MAX_MEMORY_SIZE


class CsrfViewMiddleware(inline(DjangoCsrfViewMiddleware, _csrf_refusal)):
    """``django.middleware.csrf.CsrfViewMiddleware``, its hooks run inline in async mode; an
    unsafe request's check in a hop only if its body is not parsed from memory, and a
    refusal's failure view always in a hop."""

    def __init__(self, get_response) -> None:
        super().__init__(get_response)
        if self.runs_inline:
            self._view_hop = sync_to_async(super().process_view, thread_sensitive=True)
            self._reject_hop = sync_to_async(super()._reject, thread_sensitive=True)
            self.process_view = self._aprocess_view

    async def _aprocess_view(self, request: HttpRequest, view, args, kwargs):
        if request.method not in SAFE_METHODS and not body_parsed_in_memory(request):
            return await self._view_hop(request, view, args, kwargs)
        setattr(request, _DEFER_REJECT_ATTR, True)
        try:
            response = super().process_view(request, view, args, kwargs)
        finally:
            delattr(request, _DEFER_REJECT_ATTR)
        if isinstance(response, _Refused):
            return await self._reject_hop(request, response.reason)
        return response

    def _reject(self, request: HttpRequest, reason: str) -> HttpResponseBase:
        if getattr(request, _DEFER_REJECT_ATTR, False):
            return _Refused(reason)
        return super()._reject(request, reason)


AuthenticationMiddleware = inline(OneUserAuthentication)
MessageMiddleware = inline(DjangoMessageMiddleware, _messages_refusal)
XFrameOptionsMiddleware = inline(DjangoXFrameMiddleware)
