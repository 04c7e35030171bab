"""HTTP requests run their sync hops in reused threads (ncp_asgi/request_threads.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading

import pytest
from asgiref.sync import sync_to_async
from channels.testing import HttpCommunicator

from ncp_asgi import asgi, request_threads
from ncp_asgi.request_threads import RequestThreads

pytestmark = pytest.mark.skipif(not request_threads.SUPPORTED, reason="asgiref too old")


class Recorder:
    """An ASGI app whose requests note the thread of each of their hops."""

    def __init__(self, hops: int = 2, pause: float = 0.0) -> None:
        self.hops, self.pause = hops, pause
        self.threads: list[list[int]] = []
        self.release = asyncio.Event()

    async def __call__(self, scope, receive, send) -> None:
        seen: list[int] = []
        self.threads.append(seen)
        for _ in range(self.hops):
            seen.append(await sync_to_async(threading.get_ident)())
            await asyncio.sleep(self.pause)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def _get(app) -> int:
    return (await HttpCommunicator(app, "GET", "/").get_response(timeout=5))["status"]


async def test_a_request_s_hops_share_one_thread_and_the_next_request_reuses_it():
    recorder = Recorder()
    app = RequestThreads(recorder)
    assert await _get(app) == 200
    assert await _get(app) == 200
    first, second = recorder.threads
    assert len(set(first)) == 1
    assert first == second
    assert first[0] != threading.get_ident()  # not in the event loop


async def test_requests_in_flight_at_once_have_a_thread_each():
    recorder = Recorder(pause=0.05)
    app = RequestThreads(recorder)
    await asyncio.gather(*(_get(app) for _ in range(3)))
    assert all(len(set(seen)) == 1 for seen in recorder.threads)
    assert len({seen[0] for seen in recorder.threads}) == 3
    assert len(app.idle) == 3


async def test_no_more_idle_threads_are_kept_than_allowed():
    app = RequestThreads(Recorder(pause=0.05), max_idle=1)
    await asyncio.gather(*(_get(app) for _ in range(3)))
    assert len(app.idle) == 1


async def test_a_thread_still_busy_when_its_request_ends_is_not_reused():
    started, release = threading.Event(), threading.Event()

    def blocking() -> None:
        started.set()
        release.wait(5)

    async def app(scope, receive, send) -> None:
        hop = asyncio.ensure_future(sync_to_async(blocking)())
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
        hop.cancel()  # the request gives up on the hop; the call runs on in its thread
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    threads = RequestThreads(app)
    assert await _get(threads) == 200
    release.set()
    assert threads.idle == []


async def test_websockets_are_left_alone():
    scopes = []

    async def app(scope, receive, send) -> None:
        scopes.append(scope["type"])

    threads = RequestThreads(app)
    await threads({"type": "websocket"}, None, None)
    assert scopes == ["websocket"] and threads.idle == []


def test_the_project_s_http_application_uses_it():
    assert isinstance(asgi.http_app, RequestThreads)



def test_the_url_patterns_are_loaded_with_the_application():
    """By the application's import, in a process of its own, not by the first request each
    process serves (daphne runs no system checks)."""
    code = (
        "import ncp_asgi.asgi\n"
        "from django.urls import get_resolver\n"
        "print('url_patterns' in get_resolver().__dict__)\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.stdout.strip() == "True", done.stderr
