"""CPU of the bulk sweep's own processes (the command's and its forked workers'), one sweep.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/<db> SESSION_ENGINE=patient_data.sessions.db \
    SECRET_KEY=<the store's> BENCH_PATIENT_SHARE=0.40 BENCH_INDEXED=1 BENCH_WORKERS=0 \
        .venv/bin/python bench/bulk_client_cpu.py --sessions 1000000 --full

Runs ``bench/bulk_cleanup.py``'s own ``sweep`` (``--full``: ``full``, the sweep with the
index repaired) once over a store that is already there (e.g. restored from the template
database ``bench/bulk_cleanup.py --keep-store`` leaves, ``CREATE DATABASE <db> TEMPLATE
<template>``, before each run; the bench's environment variables as it sets them for its
phases) and prints one JSON line: ``cpu`` the command's process, ``cpu_all`` it and its
workers (``getrusage`` of itself and its children), ``wall``, the sessions cleaned, and the
seconds the garbage collector ran per generation in the command's process. Run it from each
tree (before / after) against the same restored store, back to back under the bench lock:
the client's CPU is steadier than wall time on a shared machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "bench")]

import bulk_cleanup  # noqa: E402


def _rusage() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=50_000)
    parser.add_argument("--full", action="store_true", help="the full sweep (index repair)")
    args = parser.parse_args()
    bulk_cleanup.setup({})
    collector = [0.0, 0.0, 0.0]
    started: dict[str, float] = {}

    def timed(phase: str, info: dict) -> None:
        if phase == "start":
            started["at"] = time.process_time()
        else:
            collector[info["generation"]] += time.process_time() - started["at"]

    gc.callbacks.append(timed)
    before, cpu, wall = _rusage(), time.process_time(), time.perf_counter()
    run = bulk_cleanup.full if args.full else bulk_cleanup.sweep
    result = run(args.sessions)
    print(
        json.dumps(
            {
                "cpu": round(time.process_time() - cpu, 3),
                "cpu_all": round(_rusage() - before, 3),
                "workers": result["workers"],
                "wall": round(time.perf_counter() - wall, 3),
                "cleaned": result["cleaned"],
                "gc_s": [round(seconds, 3) for seconds in collector],
            }
        )
    )


if __name__ == "__main__":
    main()
