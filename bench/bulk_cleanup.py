"""Bulk cleanup benchmark: the full sweep against the transform-only ceiling, side by side.

    .venv/bin/python bench/bulk_cleanup.py [--sessions 100000] [--rounds 3]
                                           [--backend sqlite|postgres|redis|all]
                                           [--routine] [--patient-share 0.40]
                                           [--workers N] [--compare-with DIR]
                                           [--sweeps both|full|routine] [--keep-store]

For each backend, in separate processes (so each peak RSS is its own): *populate* N sessions
with a realistic mix (40 % holding patient data, a quarter unauthenticated, 5 % expired),
*ceiling* decodes, drops the patient keys and re-encodes the same mix in memory (no I/O; with
Django's own ``decode`` and ``encode``, the same yardstick for every tree), and
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

``--workers N``: the sweep's worker processes (``--workers`` of the commands; default one per
CPU, at most 4). Peak RSS is the sum over the sweep's processes (the command's and its
workers), sampled every 0.1 s from /proc; ``pss`` beside it counts pages the forked workers
share with their parent once.

``--compare-with DIR``: also run the sweeps of the tree at DIR (e.g. ``git worktree add DIR
<commit>``, same venv) on the same restored store, right after this tree's in each round:
before and after side by side on one populated store. With ``--routine`` only.

``--sweeps full`` (or ``routine``): with ``--routine``, run only that sweep (a 1M full sweep
fits a 15-minute slot of the shared machine then).

``--keep-store`` (PostgreSQL): keep the populated template database (named after the
options) and reuse it on the next run with the same options instead of populating again; the
sessions are signed with a key derived from that name, so the kept rows stay readable.

Backends: ``sqlite`` (throw-away file), ``postgres`` (database ``--pg-database``, default
``ncp_bench_bulk``, on --postgres, recreated), ``redis`` (cache sessions under a throw-away
key prefix on --redis, audit/state rows in SQLite). Only 127.0.0.1 by default.
"""

from __future__ import annotations

import argparse
import hashlib
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
import threading
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
#: The sweep's worker processes (``--workers``; 0: the commands' default).
WORKERS = int(os.environ.get("BENCH_WORKERS", "0"))


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


def django_encode(backend):
    """How a request stores a session: Django's own encode (the sweep writes cleaned sessions
    its own faster way, patient_data/bulk/backends/payloads.py; the populated store and the
    ceiling's yardstick stay Django's for every tree)."""
    return backend.store_class().encode if backend.peekable else backend.encode


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
    encode = django_encode(backend)
    people = users()
    started = time.perf_counter()
    live, past = (
        timezone.now() + timezone.timedelta(hours=12),
        timezone.now() - timezone.timedelta(minutes=5),
    )
    batch = []
    for data, expired in session_dicts(count, people):
        batch.append((secrets.token_hex(16), encode(data), expired))
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
    encode = django_encode(backend)
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
                encode(cleaned)
        return time.perf_counter() - started

    decoding = 0.0

    def decode(raws) -> float:
        started = time.perf_counter()
        for raw in raws:
            backend.decode(raw)
        return time.perf_counter() - started

    for data, _expired in session_dicts(count, people):
        chunk.append(encode(data))
        if len(chunk) >= CHUNK:
            elapsed += transform(chunk)
            decoding += decode(chunk)
            chunk = []
    elapsed += transform(chunk)
    decoding += decode(chunk)
    return {"ceiling_rate": count / elapsed, "decode_rate": count / decoding}


class Memory:
    """Peak resident memory of this process and its children (the sweep's workers) together,
    sampled from /proc: RSS, and PSS (pages shared after a fork counted once)."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.rss = self.pss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> Memory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @staticmethod
    def _tree(pid: int) -> list[int]:
        found, todo = [], [pid]
        while todo:
            current = todo.pop()
            found.append(current)
            try:
                for task in os.listdir(f"/proc/{current}/task"):
                    with open(f"/proc/{current}/task/{task}/children") as handle:
                        todo.extend(int(child) for child in handle.read().split())
            except OSError:
                continue
        return found

    @staticmethod
    def _kb(path: str, field: str) -> int:
        try:
            with open(path) as handle:
                for line in handle:
                    if line.startswith(field):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            pids = self._tree(os.getpid())
            rss = sum(self._kb(f"/proc/{pid}/status", "VmRSS:") for pid in pids)
            pss = sum(self._kb(f"/proc/{pid}/smaps_rollup", "Pss:") for pid in pids)
            self.rss, self.pss = max(self.rss, rss), max(self.pss, pss)


def decode(count: int) -> dict:
    """This machine's decode speed (``ceiling`` on at most 100,000 sessions)."""
    return ceiling(min(count, 100_000))


def sweep(count: int, index: str | None = None) -> dict:
    from patient_data.bulk.backends import backend_for
    from patient_data.bulk.selection import Selection
    from patient_data.bulk.sweep import Sweep
    from patient_data.bulk.workers import default_workers

    workers = WORKERS or default_workers()
    started = time.perf_counter()
    backend = backend_for()
    with Memory() as memory:
        report = Sweep(
            backend,
            Selection(),
            source="command",
            index=index,
            batch_size=1000,
            workers=workers,
        ).run()
    seconds = time.perf_counter() - started
    return {
        "sweep_seconds": round(seconds, 2),
        "sweep_rate": report.scanned / seconds,
        "covered_rate": count / seconds,
        "scanned": report.scanned,
        "cleaned": report.sessions,
        "removed_expired": report.deleted,
        "errors": report.errors,
        "workers": workers,
        "peak_rss_mb": max(
            memory.rss / 1024, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        ),
        "peak_pss_mb": memory.pss / 1024,
    }


def routine(count: int) -> dict:
    return sweep(count, index="read")


def full(count: int) -> dict:
    return sweep(count, index="repair")


PHASES = {
    "populate": populate,
    "ceiling": ceiling,
    "decode": decode,
    "sweep": sweep,
    "routine": routine,
    "full": full,
}


def kept_name(args) -> str:
    """The template database ``--keep-store`` keeps, named after what it holds."""
    kind = "i" if args.routine else "n"
    return f"{args.pg_database}_k{args.sessions}_{round(args.patient_share * 1000)}{kind}"


def environment(backend: str, args, var_dir: str, prefix: str) -> dict:
    secret = secrets.token_urlsafe(50)
    if args.keep_store:  # a throw-away key, stable for the kept synthetic rows
        secret = "bench-only-" + hashlib.sha256(kept_name(args).encode()).hexdigest()
    env = {
        "NCP_VAR_DIR": var_dir,
        "DEBUG": "0",  # as in production: no query log
        "SECRET_KEY": secret,
        "PATIENT_LOG_LEVEL": "WARNING",
        "BENCH_WORKERS": str(args.workers),
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
        self.snapshot = f"{args.pg_database}_snapshot"
        if backend == "postgres" and args.keep_store:
            self.snapshot = kept_name(args)

    def kept(self) -> bool:
        """Whether a kept template of the same options exists (``--keep-store``)."""
        if self.backend != "postgres" or not self.args.keep_store:
            return False
        import psycopg

        with psycopg.connect(self.args.postgres, autocommit=True) as connection:
            found = connection.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [self.snapshot]
            ).fetchone()
        return found is not None

    def keep(self) -> None:
        name = self.args.pg_database
        if self.backend == "postgres":
            _postgres(
                self.args.postgres,
                f"DROP DATABASE IF EXISTS {self.snapshot}",
                f"CREATE DATABASE {self.snapshot} TEMPLATE {name}",
            )
        elif self.backend == "sqlite":
            shutil.copyfile(self.sqlite, self.sqlite.with_suffix(".snapshot"))

    def restore(self, populate) -> None:
        name = self.args.pg_database
        if self.backend == "postgres":
            _postgres(
                self.args.postgres,
                f"DROP DATABASE IF EXISTS {name}",
                f"CREATE DATABASE {name} TEMPLATE {self.snapshot}",
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
            statements = [f"DROP DATABASE IF EXISTS {self.args.pg_database}"]
            if not self.args.keep_store:
                statements.append(f"DROP DATABASE IF EXISTS {self.snapshot}")
            _postgres(self.args.postgres, *statements)
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

        def phase(name: str, tree: Path = ROOT) -> dict:
            script = tree / "bench" / "bulk_cleanup.py"
            command = [
                sys.executable,
                str(script),
                "--phase",
                name,
                "--sessions",
                str(args.sessions),
            ]
            output = subprocess.run(
                command, env=env, cwd=tree, check=True, capture_output=True, text=True
            ).stdout
            return json.loads(output.strip().splitlines()[-1])

        store = Store(backend, args, var_dir, prefix)
        try:
            if store.kept():
                store.restore(None)
                result: dict = {"backend": backend, "sessions": args.sessions, "kept": True}
            else:
                if backend == "postgres":
                    _postgres(
                        args.postgres,
                        f"DROP DATABASE IF EXISTS {args.pg_database}",
                        f"CREATE DATABASE {args.pg_database}",
                    )
                result = {"backend": backend, "sessions": args.sessions, **phase("populate")}
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
    """Routine and full sweeps on the same restored store, alternating which goes first
    (and, with ``--compare-with``, the other tree's right after this one's)."""
    trees = {"after": ROOT}
    if args.compare_with:
        trees["before"] = Path(args.compare_with).resolve()
    runs: dict[tuple[str, str], list[dict]] = {}
    first = True
    names = ["routine", "full"] if args.sweeps == "both" else [args.sweeps]
    for round_ in range(args.rounds):
        for name in names[:: 1 if round_ % 2 == 0 else -1]:
            for label, tree in trees.items():
                if not first:
                    store.restore(lambda: phase("populate"))
                first = False
                runs.setdefault((label, name), []).append(phase(name, tree))
    decode_rate = phase("decode")["decode_rate"]

    def median(key: tuple[str, str]) -> dict:
        if key not in runs:  # not run (--sweeps): the other one's figures stand in
            key = (key[0], names[0])
        ordered = sorted(runs[key], key=lambda run: run["sweep_seconds"])
        return ordered[len(ordered) // 2]

    results = {}
    for label in trees:
        routine_run, full_run = median((label, "routine")), median((label, "full"))
        results[label] = {
            "routine": routine_run,
            "full": full_run,
            "time_ratio": full_run["sweep_seconds"] / routine_run["sweep_seconds"],
        }
    return {**results.pop("after"), "decode_rate": decode_rate, "compared": results}


def print_routine(r: dict, share: float) -> None:
    rows = [("after", r), *r.get("compared", {}).items()]
    for label, row in rows:
        routine_run, full_run = row["routine"], row["full"]
        pss = max(routine_run.get("peak_pss_mb", 0), full_run.get("peak_pss_mb", 0))
        print(
            f"{r['backend']:<9} {label:<6} {r['sessions']:>9,} {share:>6.0%} "
            f"{routine_run['sweep_seconds']:>9.2f} {routine_run['covered_rate']:>10,.0f} "
            f"{routine_run['scanned']:>8,} {full_run['sweep_seconds']:>7.2f} "
            f"{full_run['covered_rate']:>9,.0f} {row['time_ratio']:>7.1f}x "
            f"{max(routine_run['peak_rss_mb'], full_run['peak_rss_mb']):>6.0f} MB "
            f"{pss:>6.0f} MB {full_run.get('workers', 1):>7} {r['decode_rate']:>9,.0f}",
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
    parser.add_argument(
        "--workers", type=int, default=0, help="sweep worker processes (default: one per CPU)"
    )
    parser.add_argument("--compare-with", metavar="DIR", help="another tree's sweeps beside")
    parser.add_argument(
        "--sweeps",
        choices=["both", "routine", "full"],
        default="both",
        help="with --routine: which sweeps to run (both)",
    )
    parser.add_argument(
        "--keep-store", action="store_true", help="keep / reuse the PostgreSQL template"
    )
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
            f"{'backend':<9} {'code':<6} {'sessions':>9} {'share':>6} {'routine s':>9} "
            f"{'covered/s':>10} {'read':>8} {'full s':>7} {'covered/s':>9} {'full/routine':>8} "
            f"{'peak RSS':>9} {'PSS':>9} {'workers':>7} {'decode/s':>9}",
            flush=True,
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
