"""Bulk cleanup benchmark: the full sweep against the transform-only ceiling, side by side.

    .venv/bin/python bench/bulk_cleanup.py [--sessions 100000] [--rounds 3]
                                           [--backend sqlite|postgres|redis|all]
                                           [--routine] [--patient-share 0.40]

For each backend, in separate processes (so each peak RSS is its own): *populate* N sessions
with a realistic mix (40 % holding patient data, a quarter unauthenticated, 5 % expired),
*ceiling* decodes, drops the patient keys and re-encodes the same mix in memory (no I/O), and
*sweep* runs the cleanup command's engine (``cleanup_patient_sessions --force``: every
session holding patient data is cleaned, expired ones removed). Reported: sessions/s of both,
their ratio (target >= 0.5 on the databases) and the sweep's peak RSS (target < 200 MB at 1M).

Rounds: the populated store is kept aside (a copy of the SQLite file, a PostgreSQL template
database; Redis is populated again) and restored before each further sweep. The ceiling is
measured before the first sweep and after every sweep; each round's ratio is its sweep
against the mean of the ceilings right before and right after it, and the median round is
reported, with the others beside it (this machine is shared: single measurements drift).

``--routine``: the populated store also gets its index of sessions holding patient data (as
the guarded engines keep it), and each round runs a *routine* sweep (``cleanup_patient_sessions``
once the index is repaired: only the indexed sessions are read) and a *full* one
(``startup_cleanup_patient_sessions``: every session read, the index repaired), each on the
restored store. Reported: seconds and sessions/s of both (sessions covered: N), the time ratio
full / routine, and the machine's decode speed (payloads decoded per second, nothing else), so
figures of different machines can be compared. ``--patient-share``: the share of sessions
holding patient data (0.40 by default; e.g. 0.01 for a routine day).

Backends: ``sqlite`` (throw-away file), ``postgres`` (database ``--pg-database``, default
``ncp_bench_bulk``, on --postgres, recreated), ``redis`` (cache sessions under a throw-away
key prefix on --redis, audit/state rows in SQLite). Only 127.0.0.1 by default.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from patient_data.batches import batched  # noqa: E402  (needs ROOT on the path)

CHUNK = 5000
USERS = 50
#: Share of sessions holding patient data (``--patient-share``).
SHARE = float(os.environ.get("BENCH_PATIENT_SHARE", "0.40"))
#: Whether populate also writes the index (``--routine``).
INDEXED = os.environ.get("BENCH_INDEXED") == "1"


def session_dicts(count: int, users: list[tuple[str, str]], seed: int = 7):
    """(dict, expired) for ``count`` sessions of the benchmark mix, deterministic."""
    rng = random.Random(seed)
    now = time.time()
    for index in range(count):
        data: dict = {"_csrftoken": secrets.token_hex(16), "ui_theme": "light", "page": index}
        if rng.random() >= 0.25:
            user_id, user_hash = users[index % len(users)]
            data.update(
                _auth_user_id=user_id,
                _auth_user_backend="django.contrib.auth.backends.ModelBackend",
                _auth_user_hash=user_hash,
            )
        if rng.random() < SHARE:
            seen = now - rng.uniform(0, 3600)
            pid = f"SYN-BE-{index:07d}"
            data.update(
                current_patient_id=pid,
                patient_summary={"name": "Synthetic Patient", "allergies": ["SYNTH-A"] * 5},
                patient_medications=[{"code": f"SYN{i}", "dose": "1 mg"} for i in range(8)],
                **{f"patient_cda_{pid}": "<ClinicalDocument>" + "x" * 1500 + "</ClinicalDocument>"},
                _patient_meta={
                    "ref": secrets.token_hex(16),
                    "gen": 0,
                    "since": seen,
                    "seen": seen,
                    "epoch": 0,
                },
            )
        yield data, rng.random() < 0.05


def setup(engine_env: dict) -> None:
    os.environ.update(engine_env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ncp_asgi.settings")
    import django

    django.setup()


def users() -> list[tuple[str, str]]:
    from django.contrib.auth import get_user_model

    model = get_user_model()
    found = list(model.objects.order_by("pk")[:USERS])
    return [(str(user.pk), user.get_session_auth_hash()) for user in found]


def populate(count: int) -> dict:
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.contrib.sessions.models import Session
    from django.core.management import call_command
    from django.db import connections
    from django.utils import timezone

    from patient_data.bulk.backends import backend_for

    call_command("migrate", verbosity=0)
    model = get_user_model()
    model.objects.all().delete()
    Session.objects.all().delete()
    model.objects.bulk_create(
        [model(username=f"bench{i}", password="!") for i in range(USERS)]  # noqa: S106
    )
    backend = backend_for()
    people = users()
    started = time.perf_counter()
    live, past = (
        timezone.now() + timezone.timedelta(hours=12),
        timezone.now() - timezone.timedelta(minutes=5),
    )
    batch = []
    for data, expired in session_dicts(count, people):
        batch.append((secrets.token_hex(16), backend.encode(data), expired))
        if len(batch) >= CHUNK:
            _store(backend, batch, live, past, settings)
            batch = []
    if batch:
        _store(backend, batch, live, past, settings)
    if INDEXED:
        _index(backend)
    connection = connections[Session.objects.db]
    if connection.vendor == "sqlite":  # everything in the file, which is copied as it is
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return {"populate_seconds": round(time.perf_counter() - started, 1)}


def _index(backend) -> None:
    """The index the guarded engines would have written, repaired (as after a start-up)."""
    from django.utils import timezone

    from patient_data.bulk import indexed

    started = timezone.now()
    for page in backend.pages(CHUNK):
        found = ((stored.key, backend.decode(stored.raw)) for stored in page)
        indexed.confirm((key, data) for key, data in found if "current_patient_id" in data)
    indexed.finish_repair(started)


def _store(backend, batch, live, past, settings) -> None:
    from django.contrib.sessions.models import Session

    if backend.name == "cache":
        pipe = backend.client.pipeline(transaction=False)
        for key, raw, _expired in batch:  # a cache has no expired sessions: the TTL removed them
            pipe.set(backend.prefix + key, raw, ex=settings.SESSION_COOKIE_AGE)
        pipe.execute()
        return
    Session.objects.bulk_create(
        [
            Session(session_key=k, session_data=raw, expire_date=past if e else live)
            for k, raw, e in batch
        ],
        batch_size=1000,
    )


def ceiling(count: int) -> dict:
    """Decode, drop the patient keys, re-encode: the sweep's CPU work without any I/O."""
    from patient_data import meta as session_meta
    from patient_data.bulk.backends import backend_for
    from patient_data.registry import META_KEY, get_registry

    backend = backend_for()
    registry = get_registry()
    people = users()
    elapsed = 0.0
    chunk: list = []

    def transform(raws) -> float:
        started = time.perf_counter()
        for raw in raws:
            data = backend.decode(raw)
            keys = registry.patient_keys(data)
            if keys:
                dropped = set(keys)
                cleaned = {k: v for k, v in data.items() if k not in dropped}
                cleaned[META_KEY] = session_meta.after_cleanup(session_meta.read(data), 1)
                backend.encode(cleaned)
        return time.perf_counter() - started

    decoding = 0.0

    def decode(raws) -> float:
        started = time.perf_counter()
        for raw in raws:
            backend.decode(raw)
        return time.perf_counter() - started

    for data, _expired in session_dicts(count, people):
        chunk.append(backend.encode(data))
        if len(chunk) >= CHUNK:
            elapsed += transform(chunk)
            decoding += decode(chunk)
            chunk = []
    elapsed += transform(chunk)
    decoding += decode(chunk)
    return {"ceiling_rate": count / elapsed, "decode_rate": count / decoding}


def sweep(count: int, index: str | None = None) -> dict:
    from patient_data.bulk.backends import backend_for
    from patient_data.bulk.selection import Selection
    from patient_data.bulk.sweep import Sweep

    started = time.perf_counter()
    backend = backend_for()
    report = Sweep(backend, Selection(), source="command", index=index, batch_size=1000).run()
    seconds = time.perf_counter() - started
    return {
        "sweep_seconds": round(seconds, 2),
        "sweep_rate": report.scanned / seconds,
        "covered_rate": count / seconds,
        "scanned": report.scanned,
        "cleaned": report.sessions,
        "removed_expired": report.deleted,
        "errors": report.errors,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def routine(count: int) -> dict:
    return sweep(count, index="read")


def full(count: int) -> dict:
    return sweep(count, index="repair")


PHASES = {
    "populate": populate,
    "ceiling": ceiling,
    "sweep": sweep,
    "routine": routine,
    "full": full,
}


def environment(backend: str, args, var_dir: str, prefix: str) -> dict:
    env = {
        "NCP_VAR_DIR": var_dir,
        "DEBUG": "0",  # as in production: no query log
        "SECRET_KEY": secrets.token_urlsafe(50),
        "PATIENT_LOG_LEVEL": "WARNING",
    }
    if backend == "postgres":
        env["DATABASE_URL"] = args.postgres.rsplit("/", 1)[0] + "/" + args.pg_database
    if backend == "redis":
        env.update(
            REDIS_URL=args.redis,
            NCP_REDIS_PREFIX=prefix,
            SESSION_ENGINE="patient_data.sessions.cache",
        )
    else:
        env["SESSION_ENGINE"] = "patient_data.sessions.db"
    return env


def _postgres(url: str, *statements: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        for statement in statements:
            connection.execute(statement)


def drop_redis_prefix(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    for keys in batched(client.scan_iter(match=f"{prefix}:*", count=5000), 5000):
        client.delete(*keys)


class Store:
    """The populated sessions of one backend, kept aside and restored between rounds."""

    def __init__(self, backend: str, args, var_dir: str, prefix: str) -> None:
        self.backend, self.args, self.var_dir, self.prefix = backend, args, var_dir, prefix
        self.sqlite = Path(var_dir) / "db.sqlite3"

    def keep(self) -> None:
        name = self.args.pg_database
        if self.backend == "postgres":
            _postgres(
                self.args.postgres,
                f"DROP DATABASE IF EXISTS {name}_snapshot",
                f"CREATE DATABASE {name}_snapshot TEMPLATE {name}",
            )
        elif self.backend == "sqlite":
            shutil.copyfile(self.sqlite, self.sqlite.with_suffix(".snapshot"))

    def restore(self, populate) -> None:
        name = self.args.pg_database
        if self.backend == "postgres":
            _postgres(
                self.args.postgres,
                f"DROP DATABASE {name}",
                f"CREATE DATABASE {name} TEMPLATE {name}_snapshot",
            )
        elif self.backend == "sqlite":
            for suffix in ("-wal", "-shm"):
                Path(f"{self.sqlite}{suffix}").unlink(missing_ok=True)
            shutil.copyfile(self.sqlite.with_suffix(".snapshot"), self.sqlite)
        else:
            drop_redis_prefix(self.args.redis, self.prefix)
            populate()

    def discard(self) -> None:
        if self.backend == "postgres":
            _postgres(
                self.args.postgres, f"DROP DATABASE IF EXISTS {self.args.pg_database}_snapshot"
            )
        elif self.backend == "redis":
            drop_redis_prefix(self.args.redis, self.prefix)


def run_backend(backend: str, args) -> dict:
    prefix = f"bench-bulk-{secrets.token_hex(4)}"
    with tempfile.TemporaryDirectory(prefix="ncp-bench-") as var_dir:
        settings_env = environment(backend, args, var_dir, prefix)
        settings_env["BENCH_PATIENT_SHARE"] = str(args.patient_share)
        settings_env["BENCH_INDEXED"] = "1" if args.routine else "0"
        env = {**os.environ, **settings_env}
        for name in ("DATABASE_URL", "REDIS_URL"):
            if name not in settings_env:
                env.pop(name, None)

        def phase(name: str) -> dict:
            command = [sys.executable, __file__, "--phase", name, "--sessions", str(args.sessions)]
            output = subprocess.run(
                command, env=env, cwd=ROOT, check=True, capture_output=True, text=True
            ).stdout
            return json.loads(output.strip().splitlines()[-1])

        if backend == "postgres":
            _postgres(
                args.postgres,
                f"DROP DATABASE IF EXISTS {args.pg_database}",
                f"CREATE DATABASE {args.pg_database}",
            )
        store = Store(backend, args, var_dir, prefix)
        try:
            result: dict = {"backend": backend, "sessions": args.sessions, **phase("populate")}
            store.keep()
            if args.routine:
                return {**result, **routine_rounds(phase, store, args)}
            ceilings = [phase("ceiling")["ceiling_rate"]]
            sweeps = []
            for round_ in range(args.rounds):
                if round_:
                    store.restore(lambda: phase("populate"))
                sweeps.append(phase("sweep"))
                ceilings.append(phase("ceiling")["ceiling_rate"])
        finally:
            store.discard()
    ratios = [
        sweep["sweep_rate"] / statistics.fmean(ceilings[i : i + 2])
        for i, sweep in enumerate(sweeps)
    ]
    median = sorted(range(len(ratios)), key=ratios.__getitem__)[len(ratios) // 2]
    result.update(sweeps[median])
    result["ceiling_rate"] = statistics.fmean(ceilings[median : median + 2])
    result["ratio"] = ratios[median]
    result["ratios"] = ratios
    result["peak_rss_mb"] = max(sweep["peak_rss_mb"] for sweep in sweeps)
    return result


def routine_rounds(phase, store: Store, args) -> dict:
    """Routine and full sweeps on the same restored store, alternating which goes first."""
    runs: dict[str, list[dict]] = {"routine": [], "full": []}
    for round_ in range(args.rounds):
        for number, name in enumerate(["routine", "full"][:: 1 if round_ % 2 == 0 else -1]):
            if round_ or number:
                store.restore(lambda: phase("populate"))
            runs[name].append(phase(name))
    decode_rate = phase("ceiling")["decode_rate"]

    def median(name: str) -> dict:
        ordered = sorted(runs[name], key=lambda run: run["sweep_seconds"])
        return ordered[len(ordered) // 2]

    routine_run, full_run = median("routine"), median("full")
    return {
        "routine": routine_run,
        "full": full_run,
        "time_ratio": full_run["sweep_seconds"] / routine_run["sweep_seconds"],
        "decode_rate": decode_rate,
    }


def print_routine(r: dict, share: float) -> None:
    routine_run, full_run = r["routine"], r["full"]
    print(
        f"{r['backend']:<9} {r['sessions']:>9,} {share:>6.0%} "
        f"{routine_run['sweep_seconds']:>9.2f} {routine_run['covered_rate']:>10,.0f} "
        f"{routine_run['scanned']:>8,} {full_run['sweep_seconds']:>7.2f} "
        f"{full_run['covered_rate']:>9,.0f} {r['time_ratio']:>7.1f}x "
        f"{max(routine_run['peak_rss_mb'], full_run['peak_rss_mb']):>6.0f} MB "
        f"{r['decode_rate']:>9,.0f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3, help="sweeps per backend (median shown)")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "redis", "all"], default="all")
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--pg-database", default="ncp_bench_bulk", help="database to (re)create on --postgres"
    )
    parser.add_argument("--routine", action="store_true", help="routine against full sweeps")
    parser.add_argument("--patient-share", type=float, default=0.40, help="(0.40)")
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.phase:
        setup({})
        print(json.dumps(PHASES[args.phase](args.sessions)))
        return
    backends = ["sqlite", "postgres", "redis"] if args.backend == "all" else [args.backend]
    if args.routine:
        print(
            f"{'backend':<9} {'sessions':>9} {'share':>6} {'routine s':>9} {'covered/s':>10} "
            f"{'read':>8} {'full s':>7} {'covered/s':>9} {'full/routine':>8} {'peak RSS':>9} "
            f"{'decode/s':>9}"
        )
        for backend in backends:
            print_routine(run_backend(backend, args), args.patient_share)
        return
    print(
        f"{'backend':<9} {'sessions':>9} {'sweep s':>8} {'sweep/s':>9} {'ceiling/s':>10} "
        f"{'ratio':>6} {'peak RSS':>9} {'cleaned':>8} {'expired':>8} {'errors':>6}  rounds"
    )
    for backend in backends:
        r = run_backend(backend, args)
        print(
            f"{backend:<9} {r['sessions']:>9,} {r['sweep_seconds']:>8.1f} {r['sweep_rate']:>9,.0f} "
            f"{r['ceiling_rate']:>10,.0f} {r['ratio']:>6.2f} {r['peak_rss_mb']:>6.0f} MB "
            f"{r['cleaned']:>8,} {r['removed_expired']:>8,} {r['errors']:>6}  "
            + " ".join(f"{ratio:.2f}" for ratio in r["ratios"]),
            flush=True,
        )


if __name__ == "__main__":
    main()
