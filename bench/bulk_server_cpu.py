"""PostgreSQL's side of one bulk sweep: its backends' CPU, the WAL written, the blocks read.

    .venv/bin/python bench/bulk_server_cpu.py --template ncp_bench_k1000000_400i \\
        --database ncp_bench_run --sessions 1000000

Restores ``--database`` from ``--template`` (a store ``bench/bulk_cleanup.py --routine
--keep-store`` kept; its sessions are signed with the key derived from the template's name),
migrates it with the tree swept (``--tree``, this one by default: each tree sweeps its own
schema), checkpoints, then runs
``bench/bulk_client_cpu.py --full`` (the full sweep with the index repaired, the commands'
default workers) and prints one JSON line: the client's figures (``cpu_all``: the sweep's
processes), ``server_cpu`` (user + system seconds of the PostgreSQL backends serving the
database, read from ``/proc`` every 0.1 s: PostgreSQL on this machine), ``aux_cpu`` (WAL
writer, checkpointer, background writer), the WAL written (``pg_stat_wal``, cluster-wide:
run it on an otherwise quiet server), the database's blocks read outside shared buffers and
the sessions' HOT updates. Run it for each tree (before / after) in turn under the bench lock.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")
AUX = ("walwriter", "checkpointer", "background writer")


def _cpu(pid: str) -> tuple[str, float] | None:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, UnicodeDecodeError):
        return None
    return command, (int(fields[11]) + int(fields[12])) / TICK


def _postgres(database: str) -> dict[str, tuple[str, float]]:
    """pid -> (``server`` or ``aux``, CPU seconds so far) of the PostgreSQL processes."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        seen = _cpu(pid)
        if seen is None or not seen[0].startswith("postgres: "):
            continue
        command, seconds = seen
        if f" {database} " in command and "autovacuum" not in command:
            found[pid] = ("server", seconds)
        elif any(name in command for name in AUX):
            found[pid] = ("aux", seconds)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--template", required=True, help="the kept store (template database)")
    parser.add_argument("--database", required=True, help="database to (re)create from it")
    parser.add_argument("--sessions", type=int, required=True, help="sessions in the store")
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument(
        "--tree", type=Path, default=ROOT, help="the tree to migrate and sweep with (this one)"
    )
    args = parser.parse_args()
    import psycopg

    url = args.postgres.rsplit("/", 1)[0] + "/" + args.database
    var_dir = tempfile.TemporaryDirectory(prefix="ncp-bench-")  # removed at exit
    with psycopg.connect(args.postgres, autocommit=True) as server:
        server.execute(f"DROP DATABASE IF EXISTS {args.database}")
        server.execute(f"CREATE DATABASE {args.database} TEMPLATE {args.template}")
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "SECRET_KEY": "bench-only-" + hashlib.sha256(args.template.encode()).hexdigest(),
        "SESSION_ENGINE": "patient_data.sessions.db",
        "NCP_VAR_DIR": var_dir.name,
        "DEBUG": "0",
        "PATIENT_LOG_LEVEL": "WARNING",
        "BENCH_PATIENT_SHARE": os.environ.get("BENCH_PATIENT_SHARE", "0.40"),
        "BENCH_INDEXED": "1",
        "BENCH_WORKERS": os.environ.get("BENCH_WORKERS", "0"),
    }
    env.pop("REDIS_URL", None)
    tree = args.tree.resolve()
    manage = [sys.executable, str(tree / "manage.py"), "migrate", "-v0"]
    subprocess.run(manage, env=env, cwd=tree, check=True)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("CHECKPOINT")
        connection.execute("SELECT pg_stat_reset(), pg_stat_reset_shared('wal')")
        time.sleep(0.6)  # statistics are flushed to the shared views at most every 0.5 s
        before = _postgres(args.database)
        sweep = [sys.executable, str(tree / "bench" / "bulk_client_cpu.py")]
        child = subprocess.Popen(
            [*sweep, "--sessions", str(args.sessions), "--full"],
            env=env,
            cwd=tree,
            stdout=subprocess.PIPE,
            text=True,
        )
        last = dict(before)
        while child.poll() is None:
            last.update(_postgres(args.database))
            time.sleep(0.1)
        output = child.stdout.read()
        if child.returncode:
            sys.exit(child.returncode)
        time.sleep(0.6)
        wal = connection.execute("SELECT wal_bytes, wal_fpi FROM pg_stat_wal").fetchone()
        read = connection.execute(
            "SELECT blks_read FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        hot = connection.execute(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
            "WHERE relname = 'django_session'"
        ).fetchone()
    spent = {"server": 0.0, "aux": 0.0}
    for pid, (kind, seconds) in last.items():
        spent[kind] += seconds - before.get(pid, (kind, 0.0))[1]
    result = json.loads(output.strip().splitlines()[-1])
    result.update(
        server_cpu=round(spent["server"], 2),
        aux_cpu=round(spent["aux"], 2),
        wal_mb=round(int(wal[0]) / 1e6, 1),
        wal_fpi=wal[1],
        blocks_read=read[0],
        session_updates=hot[0],
        session_hot_updates=hot[1],
        load=round(os.getloadavg()[0], 2),
    )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
