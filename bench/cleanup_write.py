"""What the write of one cleanup costs, in-process on PostgreSQL: the session and its audit row.

    .venv/bin/python bench/cleanup_write.py [--sessions 400] [--concurrency 1 8]
        [--postgres postgres://postgres@127.0.0.1:5432] [--database ncp_bench_write]
        [--redis URL] [--show]

Database --database on --postgres is recreated and migrated; for each --concurrency, --sessions
stored sessions (``db`` engine) each holding patient data, then ``aclear_patient_session_data``
on each, at most that many at a time, each in its own ``ThreadSensitiveContext`` (its own sync
thread and database connection, as a request under daphne) and closing its connections at the
end (as Django does at a request's end). Reports per cleanup: the process's CPU and the wall
time of the run divided by the cleanups, the latency p50/p99, the SQL statements, the commits
and the statements run outside a transaction (each its own commit). The event goes to the
in-memory channel layer unless --redis is given. --show lists one cleanup's statements. The
audit chain is verified at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import live  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=400)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--database", default="ncp_bench_write")
    parser.add_argument("--redis", default="", help="channel layer (default: in-memory)")
    parser.add_argument("--show", action="store_true", help="list one cleanup's statements")
    args = parser.parse_args()
    live.PG_DATABASE = args.database
    with tempfile.TemporaryDirectory(prefix="bench-write-") as tmp:
        env = live.environment(args, Path(tmp), f"ncp_bench_write_{secrets.token_hex(4)}")
        if not args.redis:
            env.pop("REDIS_URL")
            os.environ.pop("REDIS_URL", None)
        live.recreate_database(args.postgres)
        live.prepare_project(env)
        tally = Tally()
        for concurrency in args.concurrency:
            keys = live.signed_in_sessions(
                f"write{concurrency}", args.sessions + 8, patient_data=True
            )
            asyncio.run(_measure(keys, concurrency, tally, args.show))
        _verify()


class Tally:
    """Statements, commits and autocommit statements of every connection of this process."""

    def __init__(self) -> None:
        from django.db.backends.base.base import BaseDatabaseWrapper
        from django.db.backends.signals import connection_created

        self.counts: Counter = Counter()
        self.shown: list[str] | None = None
        connection_created.connect(self._install, weak=False)
        commit = BaseDatabaseWrapper.commit

        def counted_commit(connection) -> None:
            self.counts["commits"] += 1
            return commit(connection)

        BaseDatabaseWrapper.commit = counted_commit

    def _install(self, sender, connection, **kwargs) -> None:
        if self._counted not in connection.execute_wrappers:
            connection.execute_wrappers.append(self._counted)

    def _counted(self, execute, sql, params, many, context):
        self.counts["statements"] += 1
        if not context["connection"].in_atomic_block:
            self.counts["autocommit"] += 1
        if self.shown is not None:
            self.shown.append(" ".join(sql.split())[:120])
        return execute(sql, params, many, context)


async def _measure(keys: list[str], concurrency: int, tally: Tally, show: bool) -> None:
    from asgiref.sync import ThreadSensitiveContext, sync_to_async
    from django.db import connections

    from patient_data.cleanup import aclear_patient_session_data
    from patient_data.sessions.db import SessionStore

    async def one(key: str) -> float:
        async with ThreadSensitiveContext():
            start = time.perf_counter()
            cleared = await aclear_patient_session_data(SessionStore(key), source="api")
            took = time.perf_counter() - start
            await sync_to_async(connections.close_all)()
        assert cleared == 1
        return took

    for key in keys[:7]:  # warm up: imports, the pool, the statement caches
        await one(key)
    counts = tally.counts
    counts.clear()
    tally.shown = [] if show else None
    await one(keys[7])
    if tally.shown is not None:
        print(f"statements of one cleanup ({counts['statements']}, {counts['commits']} commits):")
        for statement in tally.shown:
            print("   ", statement)
    tally.shown = None
    counts.clear()
    keys = keys[8:]
    limit = asyncio.Semaphore(concurrency)

    async def limited(key: str) -> float:
        async with limit:
            return await one(key)

    cpu, wall = time.process_time(), time.perf_counter()
    latencies = await asyncio.gather(*(limited(key) for key in keys))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    n = len(keys)
    latencies.sort()
    p99 = latencies[min(n - 1, round(0.99 * (n - 1)))]
    print(
        f"concurrency {concurrency}: {n} cleanups, CPU {1e3 * cpu / n:.2f} ms, "
        f"wall {1e3 * wall / n:.2f} ms per cleanup ({n / wall:.0f}/s); latency p50 "
        f"{1e3 * statistics.median(latencies):.1f} ms, p99 {1e3 * p99:.1f} ms; per cleanup "
        f"{counts['statements'] / n:.1f} statements, {counts['commits'] / n:.1f} commits, "
        f"{counts['autocommit'] / n:.1f} outside a transaction"
    )


def _verify() -> None:
    from patient_data import audit_chain

    result = audit_chain.verify(audit_chain.stored_rows())
    print(f"audit chain: {'intact' if result.intact else 'BROKEN'}, {result.checked} rows")


if __name__ == "__main__":
    main()
