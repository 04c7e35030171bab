"""Key-range partitions of a sweep over worker processes (database backends).

The command's process cuts the session table into key ranges of about ``PAGES_PER_RANGE``
pages (``boundaries``: on PostgreSQL at quantiles of a sample of the table, elsewhere at keys
read from its key index; ordered by the database, the first range open at the bottom and the
last at the top, so the ranges cover every key exactly once whatever the collation), forks
``workers - 1`` processes and sweeps alongside them. Each process takes the next range from a
shared queue and sweeps it page by page with its own database connection, exactly as one
process would: the same decisions, the same compare-and-set writes under bumped generations,
one audit row per cleanup, one transaction per page. What only the command's process may do
(the progress bar, verbose lines, the cleanup signal, events for the live monitor) is handed
back to it as it happens; the counts are added up at the end. A worker never touches the
channel layer or ``async_to_sync``: the command's process may hold threads and event-loop
state (its epoch event went out before the fork) that a forked child does not get.

A sweep runs in one process when forking cannot help or cannot be done safely: one worker
asked, a backend that is not a database table, a routine sweep of the index, no ``fork`` on
this platform, a caller inside a transaction (the workers would not see its rows), an
in-memory SQLite database, or fewer rows than two ranges.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
from typing import TYPE_CHECKING

from django.db import connections

if TYPE_CHECKING:
    from patient_data.bulk.sweep import Sweep

logger = logging.getLogger("patient_data.bulk")

#: Pages per key range: ranges small enough that the processes finish together.
PAGES_PER_RANGE = 10
#: The default: one process per CPU this process may use, at most this many (each holds a
#: database connection; more processes than cores only wait).
MAX_DEFAULT_WORKERS = 4
#: How long the command's process waits for a message before checking its workers live.
POLL_SECONDS = 0.5


def default_workers() -> int:
    """One per usable CPU, at most ``MAX_DEFAULT_WORKERS``."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_DEFAULT_WORKERS))


def _eligible(sweep: Sweep) -> bool:
    backend = sweep.backend
    if sweep.workers < 2 or not hasattr(backend, "boundaries"):
        return False
    if "fork" not in multiprocessing.get_all_start_methods():
        return False
    connection = connections[backend.using]
    if connection.in_atomic_block:
        return False
    return not (connection.vendor == "sqlite" and connection.is_in_memory_db())


def sweep(run: Sweep) -> bool:
    """Sweep every stored session of ``run`` over its worker processes; False (nothing
    done) when this run is to be swept in one process."""
    if not _eligible(run):
        return False
    bounds = run.backend.boundaries(run.batch_size * PAGES_PER_RANGE)
    if not bounds:
        return False
    ranges = list(zip(["", *bounds], [*bounds, None], strict=True))
    context = multiprocessing.get_context("fork")
    tasks, messages = context.Queue(), context.Queue()
    count = min(run.workers, len(ranges))
    _release_connections()
    children = [
        context.Process(target=_child, args=(run, tasks, messages), daemon=True)
        for _ in range(count - 1)
    ]
    for child in children:
        child.start()
    # After the forks: a queue's feeder thread starts with its first item.
    for key_range in [*ranges, *[None] * count]:
        tasks.put(key_range)
    pending = {child.pid for child in children}
    on_page = run.on_page

    def pump(block: bool) -> None:
        while pending:
            try:
                message = messages.get(block=block, timeout=POLL_SECONDS if block else None)
            except queue.Empty:
                if block:
                    _reap(run, children, pending)
                return
            _handle(run, message, pending, on_page)

    def page_done(scanned: int) -> None:
        on_page(scanned)
        pump(block=False)

    run.on_page = page_done
    try:
        _work(run, tasks)
    finally:
        run.on_page = on_page
        # Also when this process failed: the workers finish the ranges left and must be
        # heard out (a worker cannot exit while its messages fill the pipe).
        while pending:
            pump(block=True)
        for child in children:
            child.join()
    return True


def _release_connections() -> None:
    """Before forking: a child must open its own connections, never share the parent's
    sockets. A pooled connection (Django's psycopg pool) goes back to its pool, still open,
    when closed: the pools are closed too, so a child builds its own and the parent a new one
    (a child that took an inherited pooled connection would read the parent's answers)."""
    connections.close_all()
    for connection in connections.all(initialized_only=True):
        if connection.alias in getattr(connection, "_connection_pools", {}):
            connection.close_pool()


def _work(run: Sweep, tasks) -> None:
    while (key_range := tasks.get()) is not None:
        after, upto = key_range
        run.sweep_pages(run.backend.pages(run.batch_size, after=after, upto=upto))


def _child(run: Sweep, tasks, messages) -> None:
    """A worker: its own counts, its announcements sent to the command's process."""
    run.report = type(run.report)(run.report.backend, dry_run=run.dry_run, epoch=run.report.epoch)
    run._entries = set()
    run.on_page = lambda scanned: messages.put(("page", scanned))
    run.announce = lambda cleanups: messages.put(("cleanups", cleanups))
    try:
        _work(run, tasks)
    except Exception as exc:
        logger.exception("A bulk worker process failed (%s).", type(exc).__name__)
        run.report.errors += 1
    finally:
        connections.close_all()
        messages.put(("done", os.getpid(), run.report, run._entries))
        messages.close()
        messages.join_thread()


def _handle(run: Sweep, message: tuple, pending: set[int], on_page) -> None:
    kind = message[0]
    if kind == "page":
        on_page(message[1])
    elif kind == "cleanups":
        run.announce(message[1])
    else:
        _, pid, report, entries = message
        run.merge(report, entries)
        pending.discard(pid)


def _reap(run: Sweep, children, pending: set[int]) -> None:
    """A worker that died without its last message (killed, out of memory): its range is
    unfinished, which the run reports as an error."""
    for child in children:
        if child.pid in pending and not child.is_alive() and child.exitcode is not None:
            logger.error(
                "A bulk worker process ended without finishing its key range (exit code %s).",
                child.exitcode,
            )
            run.report.errors += 1
            pending.discard(child.pid)
