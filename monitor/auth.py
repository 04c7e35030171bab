"""Who may open a socket, and who may act on another session.

A refused handshake closes before accepting: daphne answers HTTP 403 (the Origin is checked
before, by ``AllowedHostsOriginValidator`` around the router).
"""

from __future__ import annotations

from typing import Any

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
