"""Reusable threads for the sync work of HTTP requests.

Django's ASGI handler gives every request a ``ThreadSensitiveContext`` of its own: the
request's thread-sensitive hops (session, ORM, signals) run in a thread started by its first
hop and joined after the response, and that new thread then builds its own Django database
connection object. A WSGI server keeps its threads from request to request; this does the
same under ASGI. Each HTTP request takes an idle single-thread executor from a free list
(asgiref's ``ThreadSensitiveContext(executor=...)``, which Django's inner context then uses)
and gives it back when it is done. A request still has its thread to itself while it runs,
and its hops still run in that one thread, in order; Django closes the thread's database
connections at the end of every request (``request_finished``) as before.

An executor still running a call when its request ends (a request cancelled during a hop) is
not reused: it is shut down once that call returns. A task that a request starts must finish
before the request does: a thread-sensitive call made after that raises ``RuntimeError``
(asgiref's rule for a context with its own executor). An asgiref without the ``executor``
argument leaves Django's own behaviour in place.

Django's handler sends ``request_started`` before anything else, and its receivers are sync
(``reset_queries`` and ``close_old_connections``, which act on the calling thread's database
connections): a hop of its own, whose only work is done in the request's thread. Here, when
those two are all it has to call, they run at the head of the request's first hop, in that same
thread, before anything of the request touches a connection; a request that never hops never
touches one. Any other receiver connected to ``request_started`` (sync or async) brings
Django's own dispatch back, hop included.

Django's handler closes the response in a hop too, after it went out (``request_finished``:
``close_old_connections``, ``close_caches``, ``reset_urlconf``). Its only business in the
request's thread is that thread's database connections. So when the thread holds none open
(a pooled connection went back after its hop, below, or the request never queried) and those
three are all the receivers, the close runs in the event loop instead: the response's resource
closers and the receivers, as Django runs them, minus the hop. The other two act on the
request's context, which is the same in the loop. A thread holding a connection (SQLite's,
or one kept for ``CONN_MAX_AGE``), any other receiver, or an asgiref whose call does not look
as expected: the hop, as Django makes it.

A pooled database connection (PostgreSQL with ``OPTIONS["pool"]``) goes back to the pool at the
end of each hop that leaves no transaction open, not only when the request ends: Django's
``close_old_connections`` logic, run per hop. Under ASGI a request holds its thread's connection
from its first query until its last hop, after the response went out, and in between it waits
in the event loop (other requests, the frames of a thousand sockets, Redis). Under load those
waits are most of its life, so connections held through them ran out: 20 per process while a
request used one for 30 ms of its 300 ms, the next requests queued for a connection, and the
queue fed itself (``docs/benchmarks.md``, issue #7). Now a connection is held only while a hop
uses it. A connection without a pool is kept for the request as before (opening one per hop
would cost more than it saves).
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext
from django.core import signals
from django.core.cache import close_caches
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.base import reset_urlconf
from django.db import close_old_connections, connections, reset_queries
from django.http import HttpResponseBase

#: Whether this asgiref lets a context use a given executor (asgiref >= 3.11).
SUPPORTED = "executor" in inspect.signature(ThreadSensitiveContext.__init__).parameters
#: Idle threads kept for the next requests; a burst beyond that starts threads as Django does.
MAX_IDLE = 32


#: ``request_started``'s receivers that only act on the calling thread's database connections.
THREAD_START_RECEIVERS = frozenset({reset_queries, close_old_connections})
#: ``request_finished``'s receivers that need the request's thread only for its connections.
LOOP_FINISH_RECEIVERS = frozenset({close_old_connections, close_caches, reset_urlconf})
#: The executor of the HTTP request being served (set by :class:`RequestThreads`).
_executor: contextvars.ContextVar[_RequestExecutor | None] = contextvars.ContextVar(
    "ncp_request_executor", default=None
)


class _RequestExecutor(ThreadPoolExecutor):
    """One thread, which runs its calls in order: idle once the last one submitted is done."""

    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix="ncp-request")
        self.last: Future | None = None
        #: Calls the request's first hop runs before its own (``request_started``'s).
        self.prelude: list[Callable[[], Any]] = []
        #: Whether the thread held an open database connection after its last hop.
        self.holds_connection = False

    def submit(self, fn, /, *args, **kwargs) -> Future:
        if not args and not kwargs and (close := self.close_in_loop(fn)) is not None:
            self.last = _ran_here(close)
            return self.last
        prelude, self.prelude = self.prelude, []
        call = functools.partial(_hop, self, prelude, functools.partial(fn, *args, **kwargs))
        self.last = super().submit(call)
        return self.last

    def close_in_loop(self, fn: Callable[[], Any]) -> Callable[[], Any] | None:
        """The response's ``close`` when ``fn`` is Django's call of it and it needs not run
        in this thread (see the module's docstring), else None."""
        if self.holds_connection:
            return None
        close = _response_close(fn)
        return close if close is not None and _finish_needs_no_thread(close.__self__) else None

    def idle(self) -> bool:
        return self.last is None or self.last.done()


class RequestThreads:
    """ASGI middleware: HTTP requests run their sync hops in reused threads."""

    def __init__(self, app: Any, max_idle: int = MAX_IDLE) -> None:
        self.app = app
        self.max_idle = max_idle
        self.idle: list[_RequestExecutor] = []

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not SUPPORTED:
            await self.app(scope, receive, send)
            return
        executor = self.idle.pop() if self.idle else _RequestExecutor()
        executor.prelude = []
        token = _executor.set(executor)
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.app(scope, receive, send)
        finally:
            _executor.reset(token)
            if executor.idle() and len(self.idle) < self.max_idle:
                self.idle.append(executor)
            else:
                executor.shutdown(wait=False)  # its thread ends after its last call


def _hop(
    executor: _RequestExecutor, prelude: list[Callable[[], Any]], call: Callable[[], Any]
) -> Any:
    """One hop of a request, in its thread: ``request_started``'s receivers if it is the first,
    the call, then its pooled connections back to the pool."""
    try:
        for first in prelude:
            first()
        return call()
    finally:
        release_pooled_connections()
        executor.holds_connection = any(
            conn.connection is not None for conn in connections.all(initialized_only=True)
        )


def _response_close(fn: Callable[[], Any]) -> Callable[[], Any] | None:
    """The response's ``close`` if ``fn`` is asgiref's call of it (``sync_to_async(
    response.close)()``: its thread handler, whose last argument is the call), else None."""
    call = fn.args[-1] if isinstance(fn, functools.partial) and fn.args else None
    if not isinstance(call, functools.partial) or call.args or call.keywords:
        return None
    method = call.func
    if getattr(method, "__name__", None) != "close":
        return None
    return method if isinstance(getattr(method, "__self__", None), HttpResponseBase) else None


def _finish_needs_no_thread(response: HttpResponseBase) -> bool:
    sender = getattr(response, "_handler_class", None)  # what its close sends as
    sync_receivers, async_receivers = signals.request_finished._live_receivers(sender)
    return not async_receivers and LOOP_FINISH_RECEIVERS.issuperset(sync_receivers)


def _ran_here(call: Callable[[], Any]) -> Future:
    """``call`` run now, in the event loop, as a finished future (its result or its error)."""
    future: Future = Future()
    try:
        future.set_result(call())
    except BaseException as exc:  # noqa: BLE001 - handed to the awaiting request, as a hop would
        future.set_exception(exc)
    return future


def release_pooled_connections() -> None:
    """Give this thread's pooled connections back to their pool, unless a transaction is open
    (``close_if_unusable_or_obsolete``: what Django does at the end of a request)."""
    for conn in connections.all(initialized_only=True):
        if (
            conn.connection is not None
            and not conn.in_atomic_block
            and conn.settings_dict.get("OPTIONS", {}).get("pool")
        ):
            conn.close_if_unusable_or_obsolete()


_django_asend = signals.request_started.asend


async def _request_started_asend(sender: Any, **named: Any) -> list:
    """``request_started.asend``: for a request served by :class:`RequestThreads` whose
    receivers are :data:`THREAD_START_RECEIVERS` only, they are queued for the head of the
    request's first hop instead of hopping now; otherwise Django's own dispatch."""
    executor = _executor.get()
    if executor is not None and isinstance(sender, type) and issubclass(sender, ASGIHandler):
        sync_receivers, async_receivers = signals.request_started._live_receivers(sender)
        if not async_receivers and THREAD_START_RECEIVERS.issuperset(sync_receivers):
            signal = signals.request_started
            executor.prelude = [
                functools.partial(receiver, signal=signal, sender=sender, **named)
                for receiver in sync_receivers
            ]
            return [(receiver, None) for receiver in sync_receivers]
    return await _django_asend(sender, **named)


if SUPPORTED:
    signals.request_started.asend = _request_started_asend
