"""Template tags of the portal: the after-the-fact notice and the widget's settings."""

from __future__ import annotations

from typing import Any

from django import template

from patient_data import notices
from patient_data.conf import conf

register = template.Library()

SOCKET_PATH = "ws/patient-session/"


def _socket_url() -> str:
    """The session socket's path when a consumer is routed there, else "" (HTTP only)."""
    from monitor.routing import websocket_urlpatterns

    routed = any(route.pattern.match(SOCKET_PATH) for route in websocket_urlpatterns)
    return "/" + SOCKET_PATH if routed else ""


@register.inclusion_tag("patient_data/notice.html", takes_context=True)
def patient_session_notice(context: template.Context) -> dict[str, Any]:
    request = context.get("request")
    return {"notice": notices.for_page(request) if request is not None else None}


@register.simple_tag
def patient_session_widget() -> dict[str, Any]:
    """What the page's script needs to know of the server's settings."""
    return {
        "socket_url": _socket_url(),
        "hidden_timeout": conf.PATIENT_HIDDEN_TIMEOUT,
        "timeout_warning": conf.PATIENT_TIMEOUT_WARNING,
        "reasons": notices.reason_texts(),
        "notice_cookie": notices.COOKIE,
    }
