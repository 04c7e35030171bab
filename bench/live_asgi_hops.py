"""bench/live.py ``--profile DIR --profiler hops``: where an HTTP request's thread hops spend
their time.

The project's ASGI application, with probes that record from SIGUSR1 to SIGUSR2, per kind of
hop (the function a request runs through ``sync_to_async`` in its thread,
``ncp_asgi.request_threads``): how many, the wait from the submit in the event loop until the
thread starts the call, the call's wall and CPU time in the thread, and the wait from its end
until the event loop runs again for it. Besides, per database query (``<query>``) its wall and
CPU time in the thread, and per connection taken (``<connection>``: from the pool, or opened)
its wall time. SIGUSR2 writes ``$NCP_BENCH_PROFILE/<pid>.json``: milliseconds per call.
The probes cost a few microseconds per hop and query.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import json
import os
import signal
import time
from typing import Any

from django.db.backends import utils as db_utils
from django.db.backends.base import base as db_base

from ncp_asgi import request_threads
from ncp_asgi.asgi import application

__all__ = ["application"]

#: Per kind: calls, until start, wall, CPU, back in the loop (seconds, summed).
_stats: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0, 0.0, 0.0, 0.0])
_on = False
_LOOP_PLUMBING = {"Context.run", "SyncToAsync.thread_handler"}


def _name(call: Any, depth: int = 0) -> str:
    """The function a hop runs, found inside asgiref's and the executor's partials."""
    if isinstance(call, functools.partial) and depth < 8:
        for part in reversed((call.func, *call.args)):
            if callable(part):
                found = _name(part, depth + 1)
                if found != "?" and found not in _LOOP_PLUMBING:
                    return found
        return "?"
    return getattr(call, "__qualname__", "?")


def _add(kind: str, *times: float) -> None:
    entry = _stats[kind]
    entry[0] += 1
    for index, value in enumerate(times, start=1):
        entry[index] += value


_submit = request_threads._RequestExecutor.submit


def _timed_submit(self, fn, /, *args, **kwargs):
    if not _on:
        return _submit(self, fn, *args, **kwargs)
    if not args and not kwargs and self.close_in_loop(fn) is not None:
        start, cpu = time.perf_counter(), time.thread_time()
        try:
            return _submit(self, fn)  # no hop: the response's close, in the loop
        finally:
            _add(
                "<close in the loop>",
                0.0,
                time.perf_counter() - start,
                time.thread_time() - cpu,
                0.0,
            )
    loop, submitted, kind, box = asyncio.get_running_loop(), time.perf_counter(), _name(fn), {}

    def timed() -> Any:
        box["start"], cpu = time.perf_counter(), time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            box["cpu"], box["end"] = time.thread_time() - cpu, time.perf_counter()

    def back() -> None:
        start, end = box["start"], box["end"]
        _add(kind, start - submitted, end - start, box["cpu"], time.perf_counter() - end)

    future = _submit(self, timed)
    future.add_done_callback(lambda _: loop.call_soon_threadsafe(back))
    return future


_execute = db_utils.CursorWrapper._execute


def _timed_execute(self, sql, params, *ignored):
    start, cpu = time.perf_counter(), time.thread_time()
    try:
        return _execute(self, sql, params, *ignored)
    finally:
        if _on:
            _add("<query>", 0.0, time.perf_counter() - start, time.thread_time() - cpu, 0.0)


_connect = db_base.BaseDatabaseWrapper.connect


def _timed_connect(self):
    start = time.perf_counter()
    try:
        return _connect(self)
    finally:
        if _on:
            _add("<connection>", 0.0, time.perf_counter() - start, 0.0, 0.0)


def _start(*_: object) -> None:
    global _on
    _stats.clear()
    _on = True


def _save(*_: object) -> None:
    global _on
    _on = False
    fields = ("until_start_ms", "wall_ms", "cpu_ms", "back_in_loop_ms")
    report = {
        kind: {"calls": int(entry[0])}
        | {field: round(1000 * entry[i + 1] / entry[0], 3) for i, field in enumerate(fields)}
        for kind, entry in _stats.items()
    }
    with open(f"{os.environ['NCP_BENCH_PROFILE']}/{os.getpid()}.json", "w") as out:
        json.dump(report, out, indent=1)


request_threads._RequestExecutor.submit = _timed_submit
db_utils.CursorWrapper._execute = _timed_execute
db_base.BaseDatabaseWrapper.connect = _timed_connect
signal.signal(signal.SIGUSR1, _start)
signal.signal(signal.SIGUSR2, _save)
