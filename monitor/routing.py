"""WebSocket routes of the live side (consumers arrive with the live-monitor work)."""

from __future__ import annotations

websocket_urlpatterns: list = []
