"""ASGI entry point: ``daphne ncp_asgi.asgi:application``.

HTTP goes to Django (with static files served in-process when NCP_SERVE_STATIC is on, so the
embedded default works offline with nothing else running); WebSockets go to the monitor's
routes behind the session/auth middleware (``monitor.auth.SocketAuthMiddleware``, one load of
both) and an Origin check.

With ``NCP_GC_FREEZE_AT_START`` (on by default) what the start has built by then (modules,
Django's apps, settings and URL patterns: hundreds of thousands of objects that live as long
as the process) is moved out of the cyclic garbage collector's sight once the application is
built (``gc.freeze``): its full collections no longer walk them again and again while the
server serves.

``NCP_GC_THRESHOLDS`` (``700,10,100`` by default) sets the collector's thresholds for the
server process. Python's own (``700,10,10``) allow a full collection every 10 collections of
the middle generation once the objects promoted since the last one reach a quarter of the
long-lived ones; with a thousand open sockets a process holds about 100,000 long-lived objects
beyond the frozen ones, and walking them stalls its event loop for 70-160 ms on a 2-core VM
(``bench/live.py --profiler pauses``): every request and frame in flight waits. At most one
full collection every 100 keeps that stall to about one a minute under load; the younger
generations are collected as often as before.
"""

from __future__ import annotations

import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ncp_asgi.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.urls import get_resolver  # noqa: E402

from monitor.auth import SocketAuthMiddleware  # noqa: E402
from monitor.routing import websocket_urlpatterns  # noqa: E402
from ncp_asgi.request_threads import RequestThreads  # noqa: E402

django_http = ASGIStaticFilesHandler(django_asgi_app) if settings.SERVE_STATIC else django_asgi_app
# Each request's sync hops in a reused thread instead of a new one (ncp_asgi/request_threads.py).
http_app = RequestThreads(django_http)

application = ProtocolTypeRouter(
    {
        "http": http_app,
        "websocket": AllowedHostsOriginValidator(
            SocketAuthMiddleware(URLRouter(websocket_urlpatterns))
        ),
    }
)

# The URL patterns, and the views they import, load now rather than in the first request each
# process serves (daphne runs no system checks, which would load them): after a restart the
# first clinician's click does not wait for the imports, nor do the requests queued behind it.
get_resolver().url_patterns  # noqa: B018 - a cached property, loaded for its effect

if getattr(settings, "NCP_GC_FREEZE_AT_START", True):
    gc.collect()  # what start-up left as garbage goes first, not into the frozen set
    gc.freeze()
if (thresholds := getattr(settings, "NCP_GC_THRESHOLDS", None)) is not None:
    gc.set_threshold(*thresholds)
