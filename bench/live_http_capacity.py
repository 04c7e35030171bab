"""How many cleanup requests one daphne process completes per second: the floor of
bench/live.py's (a) over HTTP.

    .venv/bin/python bench/live_http_capacity.py [--requests 200] [--in-flight 20]
        [--workers 1] [--redis redis://127.0.0.1:6379/0]
        [--postgres postgres://postgres@127.0.0.1:5432] [--database livebench_capacity]

The same server as bench/live.py (``DEBUG=0``, PostgreSQL database --database recreated,
channels-redis on --redis under a throw-away prefix), no sockets open: --requests
``POST /api/clear-patient-session/``, each for another session holding patient data, at most
--in-flight at a time; requests/s, p50, p99 and max latency, the statuses seen.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import live  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--in-flight", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--database", default="livebench_capacity")
    args = parser.parse_args()
    live.PG_DATABASE = args.database
    prefix = f"ncp_bench_live_{secrets.token_hex(4)}"
    with tempfile.TemporaryDirectory(prefix="bench-capacity-") as tmp:
        env = live.environment(args, Path(tmp), prefix)
        live.recreate_database(args.postgres)
        live.prepare_project(env)
        keys = live.signed_in_sessions("capacity", args.requests + 1, patient_data=True)
        live.LOG_DIR.mkdir(parents=True, exist_ok=True)
        try:
            asyncio.run(_measure(args, env, keys))
        finally:
            asyncio.run(live._forget_prefix(args.redis, prefix))


async def _measure(args: argparse.Namespace, env: dict[str, str], keys: list[str]) -> None:
    log = live.LOG_DIR / "daphne-capacity.log"
    server = live.start_daphne(env, "ncp_asgi.asgi:application", log, args.workers)
    try:
        await live.post_cleanup(server.port, keys[0])  # warm up
        limit = asyncio.Semaphore(args.in_flight)
        results: list[tuple[float, int]] = []

        async def one(key: str) -> None:
            async with limit:
                start = time.perf_counter()
                status = await live.post_cleanup(server.port, key)
                results.append((time.perf_counter() - start, status))

        start = time.perf_counter()
        await asyncio.gather(*(one(key) for key in keys[1:]))
        elapsed = time.perf_counter() - start
    finally:
        server.stop()
    times = sorted(1000 * seconds for seconds, _ in results)
    statuses = sorted({status for _, status in results})
    print(
        f"{len(times)} requests, {args.in_flight} in flight, {args.workers} process(es): "
        f"{len(times) / elapsed:.1f}/s, p50 {statistics.median(times):.1f} ms, "
        f"p99 {live.percentile(times, 0.99):.1f} ms, max {times[-1]:.1f} ms, statuses {statuses}"
    )


if __name__ == "__main__":
    main()
