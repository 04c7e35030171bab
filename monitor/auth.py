"""Who may open a socket, and who may act on another session.

A refused handshake closes before accepting: daphne answers HTTP 403 (the Origin is checked
before, by ``AllowedHostsOriginValidator`` around the router).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from channels.auth import get_user
from django.conf import settings
from django.http.cookie import parse_cookie

from monitor.sessions import Identity

VIEW_PERMISSION = "patient_data.view_session_monitor"
ACT_PERMISSION = "patient_data.cleanup_any_session"


def identity(scope: dict[str, Any]) -> Identity | None:
    """The socket's signed-in user and session, or None when the handshake must be refused:
    no session, no authenticated user, an inactive user."""
    session = scope.get("session")
    user = scope.get("user")
    session_key = session.session_key if session is not None else None
    if not session_key or user is None or not user.is_authenticated or not user.is_active:
        return None
    return Identity(user=user, session_key=session_key)


async def acan_watch(user: Any) -> bool:
    return await user.ahas_perm(VIEW_PERMISSION)


async def acan_act(user: Any) -> bool:
    return await user.ahas_perm(ACT_PERMISSION)


class SocketAuthMiddleware:
    """The socket's session (from its cookie) and user in ``scope``, loaded once.

    What Channels' ``AuthMiddlewareStack`` does for a socket (the session and the user, the
    session hash verified, through one ``database_sync_to_async`` call of Channels'
    ``get_user``), as one middleware: the stack's three keep three copies of the scope, a
    session wrapper (whose save-on-response never applies to a WebSocket) and two lazy objects
    for each socket's lifetime.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        cookies: dict[str, str] = {}
        for name, value in scope.get("headers", ()):
            if name == b"cookie":
                cookies = parse_cookie(value.decode("latin1"))
                break
        store = import_module(settings.SESSION_ENGINE).SessionStore
        scope = dict(scope, session=store(cookies.get(settings.SESSION_COOKIE_NAME)))
        scope["user"] = await get_user(scope)
        return await self.inner(scope, receive, send)
