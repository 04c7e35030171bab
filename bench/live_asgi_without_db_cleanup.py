"""bench/live.py's comparison: the project's ASGI application without Channels' per-message
database cleanup (``aclose_old_connections`` before every consumer handler and on close)."""

from __future__ import annotations

import channels.consumer
import channels.generic.websocket


async def _no_cleanup() -> None:
    return None


channels.consumer.aclose_old_connections = _no_cleanup
channels.generic.websocket.aclose_old_connections = _no_cleanup

from ncp_asgi.asgi import application  # noqa: E402  (after the patch)

__all__ = ["application"]
