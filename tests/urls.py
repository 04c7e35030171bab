"""The project's URLs plus small views the core tests drive the middleware with."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.contrib.auth import SESSION_KEY, alogout, logout
from django.db import connections
from django.http import HttpResponse, JsonResponse
from django.urls import include, path

from ncp_asgi.urls import handler400, handler403, handler404, handler500
from patient_data import cleanup, patient_session
from patient_data.decorators import passive_activity, patient_data_page

#: Set by tests around the slow view: it loads the session, waits, then writes a note.
SLOW_LOADED = threading.Event()
SLOW_RELEASE = threading.Event()


@contextmanager
def slow_request(browser, path: str) -> Iterator[dict]:
    """Runs the slow view at ``path`` for ``browser`` in a thread; the block runs while that
    request holds its loaded session. Afterwards ``result["r"]`` is its response."""
    SLOW_LOADED.clear()
    SLOW_RELEASE.clear()
    result: dict = {}

    def run() -> None:
        try:
            result["r"] = browser.get(path)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert SLOW_LOADED.wait(timeout=10)
        yield result
    finally:
        SLOW_RELEASE.set()
        thread.join(timeout=20)


async def store_view(request):
    await patient_session.astore(request, "patient_summary", {"allergies": ["SYNTH-A"]})
    await patient_session.astore(request, "current_patient_id", "SYN-XX-000001")
    await patient_session.astore(request, "patient_cda_SYN-XX-000001", "<ClinicalDocument/>")
    return HttpResponse("stored")


def sync_store_view(request):
    patient_session.store(request, "patient_summary", {"allergies": ["SYNTH-B"]})
    return HttpResponse("stored")


async def plain_view(request):
    await request.session.aget("anything")
    return HttpResponse("plain")


async def pid_view(request):
    """Which process served the request (startup_with_cleanup's workers)."""
    return HttpResponse(str(os.getpid()))


@patient_data_page
async def marked_view(request):
    return HttpResponse("marked")


@patient_data_page
def sync_marked_view(request):
    return HttpResponse("marked")


@passive_activity
def sync_passive_view(request):
    request.session.get("anything")
    return HttpResponse("passive")


@passive_activity
async def passive_view(request):
    await request.session.aget("anything")
    return HttpResponse("passive")


def note_view(request):
    request.session["note"] = request.GET.get("value", "x")
    return HttpResponse("noted")


def slow_note_view(request):
    request.session.load()
    list(request.session.keys())
    SLOW_LOADED.set()
    SLOW_RELEASE.wait(timeout=10)
    request.session["note"] = "written-by-slow-request"
    return HttpResponse("slow")


def drop_auth_view(request):
    """A hand-made logout that forgets the patient data: the middleware must catch it."""
    del request.session[SESSION_KEY]
    return HttpResponse("dropped")


def flush_view(request):
    request.session.flush()
    return HttpResponse("flushed")


def logout_view(request):
    logout(request)
    return HttpResponse("bye")


async def alogout_view(request):
    await alogout(request)
    return HttpResponse("bye")


def api_boom_view(request):
    raise RuntimeError("an unexpected failure outside the API's own error handling")


def whoami_view(request):
    return JsonResponse({"authenticated": request.user.is_authenticated})


urlpatterns = [
    path("_test/store/", store_view),
    path("_test/sync-store/", sync_store_view),
    path("_test/plain/", plain_view),
    path("_test/pid/", pid_view),
    path("_test/marked/", marked_view),
    path("_test/sync-marked/", sync_marked_view),
    path("_test/sync-passive/", sync_passive_view),
    path("_test/passive/", passive_view),
    path("_test/note/", note_view),
    path("_test/slow-note/", slow_note_view),
    path("_test/drop-auth/", drop_auth_view),
    path("_test/flush/", flush_view),
    path("_test/whoami/", whoami_view),
    path("_test/logout/", logout_view),
    path("_test/alogout/", alogout_view),
    path("api/_test/boom/", api_boom_view),
    path("", include("ncp_asgi.urls")),
]


def login_other_view(request):
    """Logging in as someone else flushes the session (no user_logged_out signal)."""
    from django.contrib.auth import get_user_model, login

    other, _ = get_user_model().objects.get_or_create(username="other-clinician")
    login(request, other, backend="django.contrib.auth.backends.ModelBackend")
    return HttpResponse("switched")


urlpatterns.insert(0, path("_test/login-other/", login_other_view))


def slow_clear_view(request):
    """Loads the session, waits, then clears its patient data (a request-path cleanup)."""
    list(request.session.items())
    SLOW_LOADED.set()
    SLOW_RELEASE.wait(timeout=10)
    cleanup.clear_patient_session_data(request)
    return HttpResponse("cleared")


async def aslow_clear_view(request):
    """Async twin of :func:`slow_clear_view`."""
    await request.session.aitems()
    SLOW_LOADED.set()
    await asyncio.to_thread(SLOW_RELEASE.wait, 10)
    await cleanup.aclear_patient_session_data(request)
    return HttpResponse("cleared")


urlpatterns[:0] = [
    path("_test/slow-clear/", slow_clear_view),
    path("_test/aslow-clear/", aslow_clear_view),
]


__all__ = ["handler400", "handler403", "handler404", "handler500", "urlpatterns"]
