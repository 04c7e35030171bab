"""bench/live.py ``--profile DIR --profiler pauses``: where a daphne process's event loop stalls.

The project's ASGI application, with two probes that record from SIGUSR1 to SIGUSR2: every
garbage collection (generation and duration, ``gc.callbacks``) and the event loop's lag (a task
asking to wake every 5 ms: how late it woke). SIGUSR2 writes ``$NCP_BENCH_PROFILE/<pid>.json``:
per generation the collections, their total and longest, and the objects tracked at the end
(and frozen, ``gc.freeze``); the lag's p50, p99, maximum and the
stalls over 20 and 50 ms. The probe's own cost is 200 wake-ups a second.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import statistics
import time
from typing import Any

from ncp_asgi.asgi import application as _shipped

TICK = 0.005
_collections: list[tuple[int, float]] = []
_lags: list[float] = []
_state: dict[str, Any] = {"on": False, "gc_start": None, "probe": None}


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    if not _state["on"]:
        return
    if phase == "start":
        _state["gc_start"] = time.perf_counter()
    elif _state["gc_start"] is not None:
        _collections.append((info["generation"], time.perf_counter() - _state["gc_start"]))
        _state["gc_start"] = None


async def _probe() -> None:
    while True:
        asked = time.perf_counter()
        await asyncio.sleep(TICK)
        if _state["on"]:
            _lags.append(time.perf_counter() - asked - TICK)


def _ms(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(1000 * ordered[min(len(ordered) - 1, int(share * len(ordered)))], 2)


def _start(*_: object) -> None:
    _collections.clear()
    _lags.clear()
    _state["on"] = True


def _save(*_: object) -> None:
    _state["on"] = False
    by_generation = {}
    for generation in (0, 1, 2):
        spans = [span for gen, span in _collections if gen == generation]
        by_generation[generation] = {
            "count": len(spans),
            "total_ms": round(1000 * sum(spans), 1),
            "max_ms": _ms(spans, 1.0),
        }
    summary = {
        "gc": by_generation,
        "tracked": [len(gc.get_objects(generation)) for generation in (0, 1, 2)],
        "frozen": gc.get_freeze_count(),
        "thresholds": gc.get_threshold(),
        "lag": {
            "samples": len(_lags),
            "p50_ms": _ms(_lags, 0.5),
            "p99_ms": _ms(_lags, 0.99),
            "max_ms": _ms(_lags, 1.0),
            "mean_ms": round(1000 * statistics.fmean(_lags), 2) if _lags else None,
            "over_20ms": sum(lag > 0.020 for lag in _lags),
            "over_50ms": sum(lag > 0.050 for lag in _lags),
        },
    }
    path = f"{os.environ['NCP_BENCH_PROFILE']}/{os.getpid()}.json"
    with open(path, "w") as out:
        json.dump(summary, out)


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if _state["probe"] is None:
        _state["probe"] = asyncio.get_running_loop().create_task(_probe())
    await _shipped(scope, receive, send)


gc.callbacks.append(_on_gc)
signal.signal(signal.SIGUSR1, _start)
signal.signal(signal.SIGUSR2, _save)
