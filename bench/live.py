"""Live side benchmark: daphne + channels-redis on real Redis, 1,000 widget sockets, 5 staff.

    .venv/bin/python bench/live.py [--sockets 1000] [--staff 5] [--cleanups 500] [--rate 100]
                                   [--redis redis://127.0.0.1:6379/0] [--workers 1]
                                   [--postgres postgres://postgres@127.0.0.1:5432]

One daphne process (``DEBUG=0``; ``--workers N``: N of them on one port, a listening socket
each, as ``startup_with_cleanup.py --workers N`` runs them) on 127.0.0.1 serves
``ncp_asgi.asgi:application`` with channels-redis on --redis and a recreated PostgreSQL
database ``ncp_bench_live``. Every widget socket is its own signed-in session holding patient
data (synthetic); the staff sockets are
one staff user's sessions with both monitor permissions. Measured, once as shipped (the
consumers skip Channels' per-message database cleanup, ``aclose_old_connections`` before
every handler)
and once with it put back (``bench/live_asgi_with_db_cleanup.py``), each on a fresh daphne:

(a) latency from ``POST /api/clear-patient-session/`` (sent at --rate per second, each for
    another session) to ``session.cleared`` at that session's socket and at every staff
    socket: p50 / p99; and the CPU each part of the run spent per cleanup meanwhile (the
    daphne processes, the PostgreSQL backends of the bench's database, the Redis server,
    this client), from ``/proc``: what 100 cleanups/s ask of the machine's cores;
(b) one broadcast to all widget sockets: one channel-layer message to the group every
    process holding sockets listens on (``events.PROCESSES_GROUP``, what a bulk run sends per
    page), carrying a cleanup event for each of the 1,000 sessions, handed by daphne to each
    session's socket as ``session.cleared``: time from the send to the last delivery;
(c) daphne's RSS before the sockets open and with all of them open: bytes per socket;
then every socket closes at once, and what the closing left in Redis is counted (presence
entries and channel-layer group memberships).
(d) the floor: the same broadcast from a bare ``websockets`` server (one process, same
    machine, same clients) in the same run.

Targets: (a) p99 < 100 ms, (b) < 1 s, (c) < 50 kB per socket. Only 127.0.0.1; every loop
is bounded; the Redis keys live under a throw-away prefix and are deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PG_DATABASE = "ncp_bench_live"
LOG_DIR = ROOT / "var" / "bench-live"  # the daphne logs, kept for a look after the run
CSRF_TOKEN = "b" * 32
# Handshakes in flight at once: each costs a few database round trips through daphne's one
# sync thread, and daphne drops a handshake not accepted within 5 s.
CONNECT_AT_ONCE = 25
TIMEOUT = 30.0
BROADCAST_TYPE = "bench.broadcast"
BROADCAST_REASON = "bench_broadcast"


def CLEARED(ref: str) -> tuple[str, str, str]:
    return ("session.cleared", ref, "manual_cleanup")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_parts(server: Server) -> dict[str, float]:
    """CPU seconds so far of each part of the run on this machine: the daphne processes, the
    PostgreSQL backends of the bench's database, the Redis server, this client process."""
    parts = {"daphne": sum(cpu_seconds(process.pid) for process in server.processes)}
    parts["postgres"] = parts["redis"] = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if command.startswith("postgres: ") and f" {PG_DATABASE} " in command:
            parts["postgres"] += cpu_seconds(int(entry.name))
        elif command.startswith("redis-server"):
            parts["redis"] += cpu_seconds(int(entry.name))
    parts["client"] = time.process_time()
    return parts


def cpu_per_cleanup(before: dict[str, float], after: dict[str, float], count: int) -> dict:
    """CPU milliseconds per cleanup of each part between two :func:`cpu_parts` (PostgreSQL:
    backends that lived through the phase; a backend that ended during it is not counted)."""
    spent = {name: max(0.0, after[name] - before[name]) for name in after}
    spent["total"] = sum(spent.values())
    return {name: round(1000 * seconds / count, 2) for name, seconds in spent.items()}


# --- the project's side: database, users, sessions --------------------------------------


def environment(args: argparse.Namespace, var_dir: Path, prefix: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "SESSION_ENGINE"}
    }
    env.update(
        DJANGO_SETTINGS_MODULE="ncp_asgi.settings",
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(50),
        SECURE_COOKIES="0",
        NCP_VAR_DIR=str(var_dir),
        DATABASE_URL=f"{args.postgres.rstrip('/')}/{PG_DATABASE}",
        REDIS_URL=args.redis,
        NCP_REDIS_PREFIX=prefix,
        PATIENT_LOG_LEVEL="WARNING",
    )
    return env


def recreate_database(server_url: str) -> None:
    import psycopg

    with psycopg.connect(f"{server_url.rstrip('/')}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {PG_DATABASE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {PG_DATABASE}")


def prepare_project(env: dict[str, str]) -> None:
    """Point this process at the bench's settings (the same env daphne gets) and migrate."""
    os.environ.update(env)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def signed_in_sessions(username: str, count: int, *, patient_data: bool, perms=()) -> list[str]:
    """``count`` stored sessions of one user (created with ``perms``); their keys."""
    from django.contrib.auth import (
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        get_user_model,
    )
    from django.contrib.auth.models import Permission

    from patient_data import patient_session
    from patient_data.sessions.db import SessionStore

    user = get_user_model().objects.create_user(username, password=secrets.token_urlsafe(16))
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    keys = []
    for index in range(count):
        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        if patient_data:
            summary = {"name": "Synthetic Patient", "problems": [f"SYN-P-{index}"]}
            patient_session.store(session, "patient_summary", summary)
        session.save()
        keys.append(session.session_key)
    return keys


def give_patient_data(keys: list[str]) -> None:
    from patient_data import patient_session
    from patient_data.sessions.db import SessionStore

    for key in keys:
        session = SessionStore(key)
        patient_session.store(session, "patient_summary", {"problems": ["SYN-P-again"]})
        session.save()


# --- daphne -------------------------------------------------------------------------------


@dataclass
class Server:
    processes: list[subprocess.Popen]
    port: int
    logs: list[Path]

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss(self) -> int:
        return sum(rss_bytes(process.pid) for process in self.processes)

    def signal(self, signum: int) -> None:
        for process in self.processes:
            process.send_signal(signum)

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=20)

    def all_served(self) -> bool:
        """Whether every process has accepted a socket (its access log says so)."""
        return all(b"WSCONNECT " in log.read_bytes() for log in self.logs)

    def errors(self) -> int:
        text = "".join(log.read_text(errors="replace") for log in self.logs)
        return text.count("Traceback") + text.count("Too many connections")


def start_daphne(env: dict[str, str], application: str, log: Path, workers: int = 1) -> Server:
    """``workers`` daphne processes on one port, as ``startup_with_cleanup.py --workers N``
    runs them (the parent binds a socket per child, each child adopts its own with ``--fd``)."""
    import socket

    from startup_with_cleanup import bind_sockets

    listeners = bind_sockets("127.0.0.1", 0, workers)
    port = listeners[0].getsockname()[1]
    env = {**env, "NCP_WORKERS": str(workers)}
    processes, logs = [], []
    for number in range(workers):
        fd = listeners[number % len(listeners)].fileno()
        command = [sys.executable, "-m", "daphne", "--fd", str(fd)]
        # daphne drops a handshake not accepted within 5 s; on a loaded 2-core machine the
        # queue of handshakes behind the one sync thread can take longer.
        command += ["--websocket_connect_timeout", "60", application]
        path = log if workers == 1 else log.with_name(f"{log.stem}-{number}{log.suffix}")
        with path.open("wb") as out:
            processes.append(
                subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out, pass_fds=(fd,))
            )
        logs.append(path)
    for listener in listeners:
        listener.close()  # the children hold them
    deadline = time.monotonic() + 60
    started = [False] * workers
    while not all(started):
        for number, path in enumerate(logs):
            started[number] = started[number] or b"Listening on" in path.read_bytes()
        if any(p.poll() is not None for p in processes) or time.monotonic() > deadline:
            for process in processes:
                process.kill()
            raise RuntimeError(f"daphne did not start, see {logs}") from None
        time.sleep(0.2)
    socket.create_connection(("127.0.0.1", port), timeout=5).close()
    return Server(processes, port, logs)


# --- clients ------------------------------------------------------------------------------


@dataclass
class Socket:
    """One client socket: the time each (frame type, session ref, reason) first arrived."""

    ws: object
    seen: dict[tuple[str, str], float] = field(default_factory=dict)
    task: asyncio.Task | None = None

    async def read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for raw in self.ws:
                now = time.perf_counter()
                frame = json.loads(raw)
                key = (frame.get("type", ""), frame.get("session", ""), frame.get("reason", ""))
                self.seen.setdefault(key, now)
        except ConnectionClosed:
            return


async def connect(url: str, headers: dict[str, str], origin: str | None, limit) -> Socket:
    from websockets.asyncio.client import connect as ws_connect

    async with limit:
        ws = await ws_connect(
            url,
            additional_headers=headers,
            origin=origin,
            open_timeout=TIMEOUT,
            max_queue=None,
            ping_interval=None,
        )
    sock = Socket(ws)
    sock.task = asyncio.get_running_loop().create_task(sock.read())
    return sock


async def connect_all(url: str, headers: list[dict[str, str]], origin: str | None) -> list:
    limit = asyncio.Semaphore(CONNECT_AT_ONCE)
    return list(await asyncio.gather(*(connect(url, h, origin, limit) for h in headers)))


async def close_all(sockets: list[Socket]) -> None:
    await asyncio.gather(*(sock.ws.close() for sock in sockets), return_exceptions=True)
    await asyncio.gather(*(sock.task for sock in sockets), return_exceptions=True)


async def until(predicate, timeout: float = TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def settle(sockets: list[Socket], quiet: float = 2.0, timeout: float = 120.0) -> None:
    """Wait until no frame arrived for ``quiet`` s, so one phase's backlog is not the next's."""
    deadline = time.monotonic() + timeout
    seen = -1
    while time.monotonic() < deadline:
        now = sum(len(sock.seen) for sock in sockets)
        if now == seen:
            return
        seen = now
        await asyncio.sleep(quiet)


async def until_async(predicate, timeout: float = TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.5)
    return True


def _cleanup_request(port: int, session_key: str, connection: str) -> bytes:
    return (
        "POST /api/clear-patient-session/ HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        f"Cookie: sessionid={session_key}; csrftoken={CSRF_TOKEN}\r\n"
        f"X-CSRFToken: {CSRF_TOKEN}\r\n"
        f"Content-Length: 0\r\nConnection: {connection}\r\n\r\n"
    ).encode()


async def post_cleanup(port: int, session_key: str) -> int:
    """The cleanup on a connection of its own, closed after the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_cleanup_request(port, session_key, "close"))
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    await reader.read()
    writer.close()
    return status


async def open_page_connections(port: int, count: int) -> list:
    """``--http-connection keep-alive``: one open connection per session, as the browser
    that loaded the page keeps it (opened before the phase, outside its CPU reading)."""
    return list(
        await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port) for _ in range(count)))
    )


async def post_cleanup_kept(connection, port: int, session_key: str) -> int:
    """The cleanup on the page's kept-alive connection: the answer is read to its length."""
    reader, writer = connection
    writer.write(_cleanup_request(port, session_key, "keep-alive"))
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def close_page_connections(connections: list) -> None:
    for _, writer in connections:
        writer.close()


# --- the measurements ---------------------------------------------------------------------


async def cleanup_latency(
    server: Server,
    widgets: list[Socket],
    staff: list[Socket],
    keys: list[str],
    refs,
    args,
    via,
    connections: list | None = None,
) -> dict:
    """(a): one cleanup every 1/rate s, each for another session, by ``POST
    /api/clear-patient-session/`` (``via="http"``: on a new connection each, or on
    ``connections``, one kept open per session) or the socket's ``cleanup`` command."""
    first = 0 if via == "http" else args.cleanups
    chosen = range(first, first + args.cleanups)
    sent: dict[str, float] = {}
    failed = []
    start = time.perf_counter()

    async def one(index: int) -> None:
        await asyncio.sleep(max(0.0, start + (index - first) / args.rate - time.perf_counter()))
        sent[refs[index]] = time.perf_counter()
        if via == "http" and connections:
            kept = connections[index - first]
            failed.append(await post_cleanup_kept(kept, server.port, keys[index]) != 200)
        elif via == "http":
            failed.append(await post_cleanup(server.port, keys[index]) != 200)
        else:
            await widgets[index].ws.send(json.dumps({"type": "cleanup", "id": index}))

    await asyncio.gather(*(one(index) for index in chosen))
    await until(
        lambda: (
            all(CLEARED(refs[i]) in widgets[i].seen for i in chosen)
            and all(CLEARED(refs[i]) in s.seen for s in staff for i in chosen)
        )
    )
    at_staff = [
        s.seen[CLEARED(refs[i])] - sent[refs[i]]
        for s in staff
        for i in chosen
        if CLEARED(refs[i]) in s.seen
    ]
    own = [
        widgets[i].seen[CLEARED(refs[i])] - sent[refs[i]]
        for i in chosen
        if CLEARED(refs[i]) in widgets[i].seen
    ]
    return {
        "cleanups": args.cleanups,
        "http_connection": None if via != "http" else "keep-alive" if connections else "close",
        "requests_failed": sum(failed),
        "own_missing": args.cleanups - len(own),
        "staff_missing": args.cleanups * len(staff) - len(at_staff),
        "own_p50_ms": 1000 * statistics.median(own) if own else None,
        "own_p99_ms": 1000 * percentile(own, 0.99) if own else None,
        "staff_p50_ms": 1000 * statistics.median(at_staff) if at_staff else None,
        "staff_p99_ms": 1000 * percentile(at_staff, 0.99) if at_staff else None,
    }


async def daphne_broadcast(widgets: list[Socket], refs: list[str]) -> dict:
    """(b): one message to the group every socket-holding process listens on."""
    from channels.layers import get_channel_layer

    from patient_data import events

    batch = [
        {
            "action": "clear_patient_data",
            "reason": BROADCAST_REASON,
            "source": "command",
            "items_cleared": 0,
            "keys": [],
            "session_ref": ref,
            "actor_id": None,
        }
        for ref in refs
    ]
    layer = get_channel_layer()
    start = time.perf_counter()
    await layer.group_send(events.PROCESSES_GROUP, {"type": events.BATCH_TYPE, "events": batch})
    result = await _broadcast_result(widgets, start, ("session.cleared", BROADCAST_REASON))
    await layer.close_pools()
    return result


async def _broadcast_result(sockets: list[Socket], start: float, kind: tuple[str, str]) -> dict:
    def arrivals() -> list[float]:
        return [
            at
            for sock in sockets
            for (frame_type, _, reason), at in sock.seen.items()
            if (frame_type, reason) == kind and at >= start
        ]

    await until(lambda: len(arrivals()) >= len(sockets))
    times = arrivals()
    return {
        "delivered": len(times),
        "last_ms": 1000 * (max(times) - start) if times else None,
        "p50_ms": 1000 * (statistics.median(times) - start) if times else None,
    }


async def redis_leftovers(redis_url: str, prefix: str) -> dict:
    """Presence entries and socket group memberships still in Redis (the processes' group,
    which daphne's fan-out listener stays in, is not a socket's)."""
    import redis.asyncio as redis

    from patient_data import events

    client = redis.Redis.from_url(redis_url)
    try:
        presence = [k async for k in client.scan_iter(match=f"{prefix}:presence:sess:*")]
        groups = [
            key
            async for key in client.scan_iter(match=f"{prefix}*group*")
            if events.PROCESSES_GROUP.encode() not in key
        ]
        members = sum([await client.zcard(key) for key in groups])
    finally:
        await client.aclose()
    return {"presence_sessions_left": len(presence), "group_memberships_left": members}


async def run_daphne(
    args, env, application: str, log: Path, keys: list[str], staff_keys: list[str]
) -> dict:
    from patient_data.refs import session_ref

    refs = [session_ref(key) for key in keys]
    # Only the profiled application answers the profile's signals (SIGUSR1 ends any other).
    profiled = args.profile if application == PROFILERS[args.profiler][0] else None
    server = start_daphne(env, application, log, args.workers)
    try:
        base = f"ws://127.0.0.1:{server.port}"
        # Warm every process up (imports, first connections, pools) before measuring RSS:
        # open sockets one at a time until each process has accepted one (the kernel picks).
        for _ in range(20 * len(server.processes)):
            warm = await connect_all(
                f"{base}/ws/patient-session/", [_cookie(keys[0])], server.origin
            )
            await until(lambda warm=warm: bool(warm[0].seen))
            await close_all(warm)
            if server.all_served():
                break
        await asyncio.sleep(1)
        before = server.rss()
        opening = time.perf_counter()
        widgets = await connect_all(
            f"{base}/ws/patient-session/", [_cookie(key) for key in keys], server.origin
        )
        staff = await connect_all(
            f"{base}/ws/monitor/", [_cookie(key) for key in staff_keys], server.origin
        )
        connected = await until(lambda: all(s.seen for s in widgets + staff))
        opened_in = time.perf_counter() - opening
        await asyncio.sleep(2)
        after = server.rss()
        result = {
            "sockets": len(widgets) + len(staff),
            "workers": args.workers,
            "all_greeted": connected,
            "sockets_opened_per_s": (len(widgets) + len(staff)) / opened_in,
            "rss_before_mb": before / 2**20,
            "rss_after_mb": after / 2**20,
            "kb_per_socket": (after - before) / (len(widgets) + len(staff)) / 1024,
        }
        for via in args.paths.split(","):
            connections = None
            if via == "http" and args.http_connection == "keep-alive":
                connections = await open_page_connections(server.port, args.cleanups)
            await settle(widgets + staff)
            before = cpu_parts(server)
            profile_start(profiled, server, args.profiler)
            result[f"cleanup_{via}"] = await cleanup_latency(
                server, widgets, staff, keys, refs, args, via, connections
            )
            if connections:
                await close_page_connections(connections)
            profile_stop(profiled, server, f"{log.stem}-{via}", PROFILERS[args.profiler][1])
            result[f"cleanup_{via}"]["cpu_ms_per_cleanup"] = cpu_per_cleanup(
                before, cpu_parts(server), args.cleanups
            )
        await settle(widgets + staff)
        result["broadcast"] = await daphne_broadcast(widgets, refs)
        closing = time.perf_counter()
        await close_all(widgets + staff)
        prefix = env["NCP_REDIS_PREFIX"]

        async def drained() -> bool:
            left = await redis_leftovers(args.redis, prefix)
            return not left["presence_sessions_left"] and not left["group_memberships_left"]

        result["closed_and_drained"] = await until_async(drained, timeout=30)
        result["drain_s"] = time.perf_counter() - closing
        result.update(await redis_leftovers(args.redis, prefix))
        result["server_errors_logged"] = server.errors()
        return result
    finally:
        server.stop()


#: ``--profile``: the shipped application under a profiler (the other variant runs without),
#: and the suffix of what it saves per process and phase.
PROFILERS = {
    "yappi": ("bench.live_asgi_profiled:application", "pstat"),
    "pauses": ("bench.live_asgi_pauses:application", "json"),
    "hops": ("bench.live_asgi_hops:application", "json"),
    # A sampling profiler outside the process: the application as shipped, nothing inflated.
    "py-spy": ("ncp_asgi.asgi:application", "txt"),
}
#: ``--profiler py-spy``: the samplers of the running phase, one per daphne process.
_samplers: list[tuple[subprocess.Popen, Path]] = []


def profile_start(directory: str | None, server: Server, profiler: str = "yappi") -> None:
    """``--profile DIR``: yappi starts in each daphne process (``bench/live_asgi_profiled.py``),
    or ``py-spy record`` attaches to each (``--profiler py-spy``: the thread holding the GIL,
    250 samples a second, collapsed stacks with the thread's id first)."""
    if not directory:
        return
    if profiler != "py-spy":
        for process in server.processes:
            os.kill(process.pid, signal.SIGUSR1)
        return
    py_spy = Path(sys.executable).with_name("py-spy")
    for process in server.processes:
        out = Path(directory) / f"{process.pid}.txt"
        command = [str(py_spy), "record", "--pid", str(process.pid), "--format", "raw"]
        command += ["--rate", "250", "--gil", "--threads", "--nonblocking", "-o", str(out)]
        sampler = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _samplers.append((sampler, out))
    time.sleep(1.0)  # attached before the phase starts


def profile_stop(directory: str | None, server: Server, name: str, suffix: str) -> None:
    """Each process saves its profile of the phase: ``DIR/<name>-<pid>.<suffix>``."""
    if not directory:
        return
    if _samplers:
        for sampler, _ in _samplers:
            sampler.send_signal(signal.SIGINT)  # py-spy writes what it sampled, then exits
        for sampler, out in _samplers:
            sampler.wait(timeout=60)
            pid = out.stem
            out.rename(out.with_name(f"{name}-{pid}.{suffix}"))
        _samplers.clear()
        return
    for process in server.processes:
        os.kill(process.pid, signal.SIGUSR2)
    for process in server.processes:
        saved = Path(directory) / f"{process.pid}.{suffix}"
        deadline = time.monotonic() + 60
        while not saved.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)  # written whole
        saved.rename(saved.with_name(f"{name}-{process.pid}.{suffix}"))


def _cookie(key: str) -> dict[str, str]:
    return {"Cookie": f"sessionid={key}"}


# --- (d) the floor: a bare websockets server ----------------------------------------------


async def floor_server(port: int) -> None:
    """Accept sockets; a ``go`` from any of them broadcasts one frame to all the others."""
    from websockets.asyncio.server import broadcast, serve

    clients = set()

    async def handler(ws) -> None:
        clients.add(ws)
        try:
            async for message in ws:
                if message == "go":
                    frame = json.dumps({"v": 1, "type": BROADCAST_TYPE, "session": ""})
                    broadcast([c for c in clients if c is not ws], frame)
        finally:
            clients.discard(ws)

    async with serve(handler, "127.0.0.1", port, ping_interval=None, max_queue=None):
        await asyncio.Future()


async def run_floor(count: int) -> dict:
    port = free_port()
    command = [sys.executable, __file__, "--floor-server", str(port)]
    process = subprocess.Popen(command, cwd=ROOT)
    try:
        url = f"ws://127.0.0.1:{port}/"
        limit = asyncio.Semaphore(CONNECT_AT_ONCE)
        for _ in range(100):
            try:
                trigger = await connect(url, {}, None, limit)
                break
            except OSError:
                await asyncio.sleep(0.1)
        before = rss_bytes(process.pid)
        sockets = await connect_all(url, [{}] * count, None)
        await asyncio.sleep(1)
        after = rss_bytes(process.pid)
        start = time.perf_counter()
        await trigger.ws.send("go")
        result = await _broadcast_result(sockets, start, (BROADCAST_TYPE, ""))
        result["kb_per_socket"] = (after - before) / count / 1024
        await close_all([*sockets, trigger])
        return result
    finally:
        process.terminate()
        process.wait(timeout=20)


# --- main ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--staff", type=int, default=5)
    parser.add_argument("--cleanups", type=int, default=500, help="per path (HTTP, socket)")
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="daphne processes on one socket (the deployment's"
        " startup_with_cleanup.py --workers N)",
    )
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--paths", default="http,socket", help="cleanup paths to measure")
    parser.add_argument(
        "--http-connection",
        choices=("close", "keep-alive"),
        default="close",
        help="each HTTP cleanup on a new connection (close), or on one kept open per session"
        " before the phase, as the page's browser keeps it (keep-alive)",
    )
    parser.add_argument(
        "--variants",
        default="as_shipped,with_db_cleanup",
        help="daphne applications to run (as_shipped, with_db_cleanup)",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="profile as_shipped in each path's phase: DIR/<variant>-<path>-<pid>.<suffix>",
    )
    parser.add_argument(
        "--profiler",
        choices=sorted(PROFILERS),
        default="yappi",
        help="yappi (pip install yappi; .pstat), pauses (GC and event-loop lag; .json), hops"
        " (an HTTP request's thread hops, queries and connections; .json) or py-spy (pip"
        " install py-spy; sampled collapsed stacks of the GIL's holder; .txt)",
    )
    parser.add_argument("--floor-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor_server:
        asyncio.run(floor_server(args.floor_server))
        return
    if 2 * args.cleanups > args.sockets:
        parser.error("--cleanups is at most half of --sockets (each cleanup is another session)")

    prefix = f"ncp_bench_live_{secrets.token_hex(4)}"
    shipped = "ncp_asgi.asgi:application"
    if args.profile:
        args.profile = str(Path(args.profile).resolve())
        Path(args.profile).mkdir(parents=True, exist_ok=True)
        shipped = PROFILERS[args.profiler][0]
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
        env = environment(args, Path(tmp), prefix)
        if args.profile:
            env["NCP_BENCH_PROFILE"] = args.profile
        recreate_database(args.postgres)
        prepare_project(env)
        keys = signed_in_sessions("bench-clinician", args.sockets, patient_data=True)
        perms = ("view_session_monitor", "cleanup_any_session")
        staff_keys = signed_in_sessions("bench-staff", args.staff, patient_data=False, perms=perms)
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        results = {"floor": asyncio.run(run_floor(args.sockets))}
        try:
            for name, application in (
                ("as_shipped", shipped),
                ("with_db_cleanup", "bench.live_asgi_with_db_cleanup:application"),
            ):
                if name not in args.variants.split(","):
                    continue
                give_patient_data(keys[: 2 * args.cleanups])
                log = LOG_DIR / f"daphne-{name}.log"
                results[name] = asyncio.run(
                    run_daphne(args, env, application, log, keys, staff_keys)
                )
        finally:
            asyncio.run(_forget_prefix(args.redis, prefix))
    results["load_average"] = os.getloadavg()
    json.dump(results, sys.stdout, indent=2)
    sys.stdout.write("\n")


async def _forget_prefix(redis_url: str, prefix: str) -> None:
    import redis.asyncio as redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        for start in range(0, len(keys), 500):
            await client.delete(*keys[start : start + 500])
    finally:
        await client.aclose()


if __name__ == "__main__":
    main()
