"""WebSocket routes of the live side (behind session/auth middleware and the Origin check,
see ``ncp_asgi.asgi``)."""

from __future__ import annotations

from django.urls import path

from monitor.consumers import MonitorConsumer, PatientSessionConsumer

websocket_urlpatterns = [
    path("ws/patient-session/", PatientSessionConsumer.as_asgi()),
    path("ws/monitor/", MonitorConsumer.as_asgi()),
]
