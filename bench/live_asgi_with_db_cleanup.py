"""bench/live.py's comparison: the project's ASGI application with Channels' per-message
database cleanup put back (``AsyncConsumer.dispatch`` runs ``aclose_old_connections``, a hop
through the one sync thread, before every message; the project's consumers skip it)."""

from __future__ import annotations

from channels.consumer import AsyncConsumer

from ncp_asgi.asgi import application

__all__ = ["application"]

from monitor.consumers import _LiveSocket  # after the app: needs Django set up

_LiveSocket.dispatch = AsyncConsumer.dispatch
