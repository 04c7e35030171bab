"""bench/live.py ``--profile DIR``: the project's ASGI application, with yappi (CPU clock, every
thread, coroutines attributed to their functions) started on SIGUSR1 and saved on SIGUSR2 to
``$NCP_BENCH_PROFILE/<pid>.pstat`` (renamed by bench/live.py after the phase; read it with
``pstats``). Needs ``pip install yappi``. The profiler multiplies the CPU of every call: compare
shares within a profile, never its times with an unprofiled run."""

from __future__ import annotations

import os
import signal

import yappi

from ncp_asgi.asgi import application

__all__ = ["application"]


def _start(*_: object) -> None:
    yappi.set_clock_type("cpu")
    yappi.clear_stats()
    yappi.start(builtins=False, profile_threads=True)


def _save(*_: object) -> None:
    yappi.stop()
    yappi.get_func_stats().save(f"{os.environ['NCP_BENCH_PROFILE']}/{os.getpid()}.pstat", "pstat")


signal.signal(signal.SIGUSR1, _start)
signal.signal(signal.SIGUSR2, _save)
