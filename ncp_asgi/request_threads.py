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
"""

from __future__ import annotations

import inspect
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext

#: Whether this asgiref lets a context use a given executor (asgiref >= 3.11).
SUPPORTED = "executor" in inspect.signature(ThreadSensitiveContext.__init__).parameters
#: Idle threads kept for the next requests; a burst beyond that starts threads as Django does.
MAX_IDLE = 32


class _RequestExecutor(ThreadPoolExecutor):
    """One thread, which runs its calls in order: idle once the last one submitted is done."""

    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix="ncp-request")
        self.last: Future | None = None

    def submit(self, fn, /, *args, **kwargs) -> Future:
        self.last = super().submit(fn, *args, **kwargs)
        return self.last

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
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.app(scope, receive, send)
        finally:
            if executor.idle() and len(self.idle) < self.max_idle:
                self.idle.append(executor)
            else:
                executor.shutdown(wait=False)  # its thread ends after its last call
