"""Django's I/O-free middlewares, run in the event loop instead of through a thread hop.

Under ASGI, Django runs every hook of a ``MiddlewareMixin`` middleware through
``sync_to_async``: two hops per middleware and request (a thread switch each, and a new
thread per request for the first), though Security, Common, XFrame, Auth (lazy user), CSRF
with cookie storage and Messages with cookie storage do no I/O at all. :func:`inline` adapts
such a class without changing it: a subclass whose async ``__call__`` runs the class's own
``process_request``/``process_response`` inline, and whose ``process_view`` runs inline for
safe methods (an unsafe one may parse the body and render the failure view, so it keeps its
hop). The sync mode, and every decision, stay Django's.

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
from django.http import HttpRequest, HttpResponseBase
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
            if self.runs_inline and hasattr(self, "process_view"):
                self.process_view = _inline_when_safe(self.process_view)

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


def _inline_when_safe(process_view: Callable) -> Callable:
    hop = sync_to_async(process_view, thread_sensitive=True)

    async def aprocess_view(request: HttpRequest, view, args, kwargs):
        if request.method in SAFE_METHODS:
            return process_view(request, view, args, kwargs)
        return await hop(request, view, args, kwargs)

    return aprocess_view


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
CsrfViewMiddleware = inline(DjangoCsrfViewMiddleware, _csrf_refusal)
AuthenticationMiddleware = inline(OneUserAuthentication)
MessageMiddleware = inline(DjangoMessageMiddleware, _messages_refusal)
XFrameOptionsMiddleware = inline(DjangoXFrameMiddleware)
