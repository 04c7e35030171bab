"""Bulk cleanup benchmark: the full sweep against the transform-only ceiling, side by side.

    .venv/bin/python bench/bulk_cleanup.py [--sessions 100000] [--backend sqlite|postgres|redis|all]

For each backend, in separate processes (so each peak RSS is its own): *populate* N sessions
with a realistic mix (40 % holding patient data, a quarter unauthenticated, 5 % expired),
*ceiling* decodes, drops the patient keys and re-encodes the same mix in memory (no I/O), and
*sweep* runs the cleanup command's engine (``cleanup_patient_sessions --force``: every
session holding patient data is cleaned, expired ones removed). Reported: sessions/s of both,
their ratio (target >= 0.5 on the databases) and the sweep's peak RSS (target < 200 MB at 1M).

Backends: ``sqlite`` (throw-away file), ``postgres`` (database ``ncp_bench_bulk`` on
--postgres, recreated), ``redis`` (cache sessions under a throw-away key prefix on --redis,
audit/state rows in SQLite). Only 127.0.0.1 by default.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from patient_data.batches import batched  # noqa: E402  (needs ROOT on the path)

PG_DATABASE = "ncp_bench_bulk"
CHUNK = 5000
USERS = 50


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
        if rng.random() < 0.40:
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
    return {"populate_seconds": round(time.perf_counter() - started, 1)}


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

    for data, _expired in session_dicts(count, people):
        chunk.append(backend.encode(data))
        if len(chunk) >= CHUNK:
            elapsed += transform(chunk)
            chunk = []
    elapsed += transform(chunk)
    return {"ceiling_rate": count / elapsed}


def sweep(count: int) -> dict:
    from patient_data.bulk.backends import backend_for
    from patient_data.bulk.selection import Selection
    from patient_data.bulk.sweep import Sweep

    started = time.perf_counter()
    report = Sweep(backend_for(), Selection(), source="command", batch_size=1000).run()
    seconds = time.perf_counter() - started
    return {
        "sweep_seconds": round(seconds, 2),
        "sweep_rate": report.scanned / seconds,
        "scanned": report.scanned,
        "cleaned": report.sessions,
        "removed_expired": report.deleted,
        "errors": report.errors,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


PHASES = {"populate": populate, "ceiling": ceiling, "sweep": sweep}


def environment(backend: str, args, var_dir: str, prefix: str) -> dict:
    env = {
        "NCP_VAR_DIR": var_dir,
        "DEBUG": "0",  # as in production: no query log
        "SECRET_KEY": secrets.token_urlsafe(50),
        "PATIENT_LOG_LEVEL": "WARNING",
    }
    if backend == "postgres":
        env["DATABASE_URL"] = args.postgres.rsplit("/", 1)[0] + "/" + PG_DATABASE
    if backend == "redis":
        env.update(
            REDIS_URL=args.redis,
            NCP_REDIS_PREFIX=prefix,
            SESSION_ENGINE="patient_data.sessions.cache",
        )
    else:
        env["SESSION_ENGINE"] = "patient_data.sessions.db"
    return env


def recreate_postgres(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {PG_DATABASE}")
        connection.execute(f"CREATE DATABASE {PG_DATABASE}")


def drop_redis_prefix(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    for keys in batched(client.scan_iter(match=f"{prefix}:*", count=5000), 5000):
        client.delete(*keys)


def run_backend(backend: str, args) -> dict:
    prefix = f"bench-bulk-{secrets.token_hex(4)}"
    with tempfile.TemporaryDirectory(prefix="ncp-bench-") as var_dir:
        env = {**os.environ, **environment(backend, args, var_dir, prefix)}
        for name in ("DATABASE_URL", "REDIS_URL"):
            if name not in environment(backend, args, var_dir, prefix):
                env.pop(name, None)
        if backend == "postgres":
            recreate_postgres(args.postgres)
        result: dict = {"backend": backend, "sessions": args.sessions}
        try:
            ceilings = []
            # The ceiling is measured right before and right after the sweep and averaged:
            # on a shared machine a single measurement drifts by a third between runs.
            for phase in ("populate", "ceiling", "sweep", "ceiling"):
                command = [
                    sys.executable,
                    __file__,
                    "--phase",
                    phase,
                    "--sessions",
                    str(args.sessions),
                ]
                output = subprocess.run(
                    command, env=env, cwd=ROOT, check=True, capture_output=True, text=True
                ).stdout
                figures = json.loads(output.strip().splitlines()[-1])
                if phase == "ceiling":
                    ceilings.append(figures["ceiling_rate"])
                result.update(figures)
            result["ceiling_rate"] = statistics.fmean(ceilings)
        finally:
            if backend == "redis":
                drop_redis_prefix(args.redis, prefix)
    result["ratio"] = result["sweep_rate"] / result["ceiling_rate"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "redis", "all"], default="all")
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        setup({})
        print(json.dumps(PHASES[args.phase](args.sessions)))
        return
    backends = ["sqlite", "postgres", "redis"] if args.backend == "all" else [args.backend]
    print(
        f"{'backend':<9} {'sessions':>9} {'sweep s':>8} {'sweep/s':>9} {'ceiling/s':>10} "
        f"{'ratio':>6} {'peak RSS':>9} {'cleaned':>8} {'expired':>8} {'errors':>6}"
    )
    for backend in backends:
        r = run_backend(backend, args)
        print(
            f"{backend:<9} {r['sessions']:>9,} {r['sweep_seconds']:>8.1f} {r['sweep_rate']:>9,.0f} "
            f"{r['ceiling_rate']:>10,.0f} {r['ratio']:>6.2f} {r['peak_rss_mb']:>6.0f} MB "
            f"{r['cleaned']:>8,} {r['removed_expired']:>8,} {r['errors']:>6}",
            flush=True,
        )


if __name__ == "__main__":
    main()
