"""HTTP requests run their sync hops in reused threads (ncp_asgi/request_threads.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
from asgiref.sync import ThreadSensitiveContext, sync_to_async
from channels.testing import HttpCommunicator
from django.core import signals
from django.core.asgi import get_asgi_application
from django.core.handlers.asgi import ASGIHandler
from django.db import connection, transaction
from django.http import HttpResponse, HttpResponseBase

from ncp_asgi import asgi, request_threads
from ncp_asgi.request_threads import RequestThreads

pytestmark = pytest.mark.skipif(not request_threads.SUPPORTED, reason="asgiref too old")


@contextlib.contextmanager
def _receiving(signal) -> Iterator[list[int]]:
    """Another receiver of ``signal`` for the block: the thread of each of its calls."""
    threads: list[int] = []

    def receiver(**kwargs) -> None:
        threads.append(threading.get_ident())

    signal.connect(receiver)
    try:
        yield threads
    finally:
        signal.disconnect(receiver)


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


class StartedThenHops:
    """What Django's handler does first: ``request_started``, then the request's hops."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, list]] = []

    async def __call__(self, scope, receive, send) -> None:
        await signals.request_started.asend(sender=ASGIHandler, scope=scope)
        self.seen.append(await sync_to_async(_thread_and_log)())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def _thread_and_log() -> tuple[int, list]:
    return threading.get_ident(), list(connection.queries_log)


@pytest.mark.django_db
async def test_request_started_runs_at_the_head_of_the_first_hop_in_the_request_s_thread(hops):
    app = StartedThenHops()
    threads = RequestThreads(app)
    assert await _get(threads) == 200
    thread = app.seen[0][0]
    # Something left in that thread's query log, as a request of DEBUG leaves it.
    await asyncio.get_running_loop().run_in_executor(
        threads.idle[0], lambda: connection.queries_log.append({"sql": "left"})
    )
    hops.clear()
    assert await _get(threads) == 200
    assert app.seen[1] == (thread, [])  # reset_queries ran there, before the hop's own call
    assert hops == ["_thread_and_log"]  # and request_started made no hop of its own


@pytest.mark.django_db
async def test_another_receiver_of_request_started_brings_django_s_hop_back(hops):
    with _receiving(signals.request_started) as called:
        app = StartedThenHops()
        hops.clear()
        assert await _get(RequestThreads(app)) == 200
    assert hops == ["Signal.asend.<locals>.sync_send", "_thread_and_log"]
    assert called == [app.seen[0][0]]  # Django's dispatch, in the request's thread


@pytest.mark.django_db
async def test_request_started_outside_request_threads_is_django_s(hops):
    await signals.request_started.asend(sender=ASGIHandler, scope={"type": "http"})
    assert hops == ["Signal.asend.<locals>.sync_send"]


@pytest.mark.django_db(transaction=True)
async def test_a_page_through_django_s_handler_makes_no_request_started_hop(hops):
    app = RequestThreads(get_asgi_application())
    communicator = HttpCommunicator(
        app, "GET", "/accounts/login/", headers=[(b"host", b"testserver")]
    )
    response = await communicator.get_response(timeout=10)
    assert response["status"] == 200
    await communicator.wait(timeout=10)  # the application has returned
    assert "Signal.asend.<locals>.sync_send" not in hops
    assert "HttpResponseBase.close" in hops  # Django asks; RequestThreads decides where it runs


def _pooled() -> bool:
    return bool(connection.settings_dict["OPTIONS"].get("pool"))


class QueriesInTwoHops:
    """A request that queries in one hop and looks at its thread's connection in the next."""

    def __init__(self, first=None) -> None:
        self.first = first or (lambda: connection.cursor().execute("SELECT 1"))
        self.held: list[bool] = []

    async def __call__(self, scope, receive, send) -> None:
        await sync_to_async(self.first)()
        self.held.append(await sync_to_async(lambda: connection.connection is not None)())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@pytest.mark.django_db(transaction=True)
async def test_a_pooled_connection_goes_back_to_the_pool_after_each_hop():
    app = QueriesInTwoHops()
    assert await _get(RequestThreads(app)) == 200
    # PostgreSQL's pool: back after the hop that used it; no pool: kept for the request.
    assert app.held == [not _pooled()]


@pytest.mark.django_db(transaction=True)
async def test_a_hop_that_leaves_a_transaction_open_keeps_its_connection():
    opened = []

    def begin() -> None:
        atomic = transaction.atomic()
        atomic.__enter__()
        opened.append(atomic)
        connection.cursor().execute("SELECT 1")

    app = QueriesInTwoHops(begin)
    threads = RequestThreads(app)
    assert await _get(threads) == 200
    assert app.held == [True]
    await asyncio.get_running_loop().run_in_executor(
        threads.idle[0], lambda: opened[0].__exit__(None, None, None)
    )


class ClosesLikeDjango:
    """What Django's handler does at the end: the response's close through ``sync_to_async``,
    after the request's own hops (``first``, if any)."""

    def __init__(self, first=None) -> None:
        self.first = first
        self.closed_in: list[int] = []
        self.connection_after: list[bool] = []

    async def __call__(self, scope, receive, send) -> None:
        if self.first is not None:
            await sync_to_async(self.first)()
        response = HttpResponse("ok")
        response._handler_class = ASGIHandler
        response._resource_closers.append(lambda: self.closed_in.append(threading.get_ident()))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        await sync_to_async(response.close)()
        assert response.closed
        self.connection_after.append(
            await sync_to_async(lambda: connection.connection is not None)()
        )


def _query() -> None:
    connection.cursor().execute("SELECT 1")


async def _served(app) -> int:
    """The status, once the application has returned (after the response's close)."""
    communicator = HttpCommunicator(app, "GET", "/")
    status = (await communicator.get_response(timeout=5))["status"]
    await communicator.wait(timeout=5)
    return status


@pytest.mark.django_db(transaction=True)
async def test_a_page_through_django_s_handler_closes_its_response_in_the_loop(monkeypatch):
    closed_in: list[int] = []
    original = HttpResponseBase.close

    def close(self) -> None:  # named as the method it stands for
        closed_in.append(threading.get_ident())
        original(self)

    monkeypatch.setattr(HttpResponseBase, "close", close)
    app = RequestThreads(get_asgi_application())
    communicator = HttpCommunicator(
        app, "GET", "/accounts/login/", headers=[(b"host", b"testserver")]
    )
    assert (await communicator.get_response(timeout=10))["status"] == 200
    await communicator.wait(timeout=10)
    assert closed_in == [threading.get_ident()]  # the login form queries nothing


@pytest.mark.django_db(transaction=True)
async def test_the_response_closes_in_the_loop_once_the_thread_holds_no_connection():
    app = ClosesLikeDjango(_query)
    threads = RequestThreads(app)
    assert await _served(threads) == 200
    in_loop = app.closed_in == [threading.get_ident()]
    # PostgreSQL's pool: the connection went back after the query's hop, nothing is left for
    # the close to do in that thread. SQLite (no pool): the thread keeps its connection, and
    # request_finished closes it there, in a hop as before.
    assert in_loop == _pooled()
    if _pooled():
        assert app.connection_after == [False]


@pytest.mark.django_db(transaction=True)
async def test_a_request_that_never_queried_closes_in_the_loop_on_any_database():
    app = ClosesLikeDjango()
    assert await _served(RequestThreads(app)) == 200
    assert app.closed_in == [threading.get_ident()]


@pytest.mark.django_db(transaction=True)
async def test_another_receiver_of_request_finished_brings_the_close_hop_back():
    with _receiving(signals.request_finished) as seen:
        app = ClosesLikeDjango()
        assert await _served(RequestThreads(app)) == 200
    assert app.closed_in == seen
    assert seen[0] != threading.get_ident()  # in the request's thread


@pytest.mark.django_db(transaction=True)
async def test_a_close_that_fails_in_the_loop_fails_the_request_as_in_a_hop(monkeypatch):
    ran_in: list[int] = []

    def close(self) -> None:  # named as the method it stands for
        ran_in.append(threading.get_ident())
        raise OSError("closing failed")

    monkeypatch.setattr(HttpResponseBase, "close", close)
    executor = request_threads._RequestExecutor()
    try:
        async with ThreadSensitiveContext(executor=executor):
            with pytest.raises(OSError, match="closing failed"):
                await sync_to_async(HttpResponse("ok").close)()
    finally:
        executor.shutdown(wait=False)
    assert ran_in == [threading.get_ident()]


@pytest.mark.django_db(transaction=True)
async def test_a_steady_patient_page_served_by_daphne_s_stack_hops_once_on_a_pool(
    patient, monkeypatch, settings
):
    """The whole stack as daphne serves it (``RequestThreads`` around Django's handler): the
    session, user and patient rows in one hop, ``request_started`` at its head, and the
    response's close in the loop once the pooled connection went back; SQLite's thread keeps
    its connection, so its close hops."""
    from django.conf import settings as django_settings

    from tests.conftest import steady_client

    settings.PATIENT_ACTIVITY_WRITE_INTERVAL = 3600  # steady: no activity write due
    settings.PATIENT_EPOCH_CACHE_SECONDS = 3600
    client, url = await steady_client(patient)
    ran: list[str] = []
    hop = request_threads._hop

    def counted(executor, prelude, call):
        ran.append("hop")
        return hop(executor, prelude, call)

    monkeypatch.setattr(request_threads, "_hop", counted)
    name = django_settings.SESSION_COOKIE_NAME
    cookie = f"{name}={client.cookies[name].value}"
    communicator = HttpCommunicator(
        RequestThreads(get_asgi_application()),
        "GET",
        url,
        headers=[(b"host", b"testserver"), (b"cookie", cookie.encode())],
    )
    response = await communicator.get_response(timeout=10)
    await communicator.wait(timeout=10)
    assert response["status"] == 200
    headers = {key.lower(): value for key, value in response["headers"]}
    assert headers[b"x-patient-data-page"] == b"true"
    assert len(ran) == (1 if _pooled() else 2)
