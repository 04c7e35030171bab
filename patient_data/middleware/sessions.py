"""Django's ``SessionMiddleware`` without the thread hops of its async mode.

Django's session middleware is a ``MiddlewareMixin``: under ASGI both of its hooks run through
``sync_to_async`` on every request, and its response hook calls the sync ``save()``. This
subclass is a drop-in replacement (same settings, same cookie behaviour, still a
``SessionMiddleware`` for Django's own checks): in async mode the store is created in the event
loop, loaded lazily by the first ``aget``/``aitems`` of whoever needs it, and written with
``asave()`` only when it was modified (or ``SESSION_SAVE_EVERY_REQUEST`` asks for it). The
guarded engines keep their no-resurrection lock: their ``asave()`` takes it when needed.
A view's declared reads (``patient_data.prefetch``) join the session's load hop.
The sync mode is Django's, unchanged.
"""

from __future__ import annotations

import time
from functools import partial

from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase, UpdateError
from django.contrib.sessions.exceptions import SessionInterrupted
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.http import HttpRequest, HttpResponseBase
from django.utils.cache import patch_vary_headers
from django.utils.http import http_date

from patient_data.prefetch import forget, read_in_hop


class SessionMiddleware(DjangoSessionMiddleware):
    """``django.contrib.sessions.middleware.SessionMiddleware``, async-native."""

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        self.process_request(request)  # a store for the cookie's key; nothing is read yet
        session = request.session
        if hasattr(session, "load_companions"):
            # What the view declared it will read, read in the session's own load hop.
            session.load_companions = (*session.load_companions, partial(read_in_hop, request))
        try:
            response = await self.get_response(request)
        finally:
            forget(request)
        return await self.aprocess_response(request, response)

    async def aprocess_response(
        self, request: HttpRequest, response: HttpResponseBase
    ) -> HttpResponseBase:
        """``process_response`` with the session's async API (same decisions, same cookie)."""
        try:
            session = request.session
            accessed, modified, empty = session.accessed, session.modified, session.is_empty()
        except AttributeError:
            return response
        if settings.SESSION_COOKIE_NAME in request.COOKIES and empty:
            response.delete_cookie(
                settings.SESSION_COOKIE_NAME,
                path=settings.SESSION_COOKIE_PATH,
                domain=settings.SESSION_COOKIE_DOMAIN,
                samesite=settings.SESSION_COOKIE_SAMESITE,
            )
            need_vary_cookie = True
        else:
            need_vary_cookie = accessed
            # 5xx: Django leaves the session unsaved (and the cookie as it was).
            if (modified or settings.SESSION_SAVE_EVERY_REQUEST) and not empty:
                if response.status_code < 500:
                    await self._asave_and_set_cookie(session, response)
                    need_vary_cookie = True
        if need_vary_cookie:
            patch_vary_headers(response, ("Cookie",))
        return response

    async def _asave_and_set_cookie(self, session: SessionBase, response: HttpResponseBase) -> None:
        if await session.aget_expire_at_browser_close():
            max_age = expires = None
        else:
            max_age = await session.aget_expiry_age()
            expires = http_date(time.time() + max_age)
        try:
            await session.asave()
        except UpdateError as exc:
            raise SessionInterrupted(
                "The request's session was deleted before the request completed. The user "
                "may have logged out in a concurrent request, for example."
            ) from exc
        response.set_cookie(
            settings.SESSION_COOKIE_NAME,
            session.session_key,
            max_age=max_age,
            expires=expires,
            domain=settings.SESSION_COOKIE_DOMAIN,
            path=settings.SESSION_COOKIE_PATH,
            secure=settings.SESSION_COOKIE_SECURE or None,
            httponly=settings.SESSION_COOKIE_HTTPONLY or None,
            samesite=settings.SESSION_COOKIE_SAMESITE,
        )
