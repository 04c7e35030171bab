#!/usr/bin/env python
"""Start the NCP portal: the start-up patient-session cleanup, then daphne.

    python startup_with_cleanup.py [--port 8080] [--bind 127.0.0.1] [--all-sessions] [--force]
        [--dry-run] [--older-than-hours 12] [--workers N] [--ignore-cleanup-errors]

The cleanup runs in this process (``startup_cleanup_patient_sessions``: the patient-data epoch
is advanced, then stored sessions are swept); if it fails the server does not start unless
``--ignore-cleanup-errors`` is given. daphne has no workers option: this process binds one
listening socket per child (``SO_REUSEPORT``, on one address) and starts N ``daphne --fd``
children, each on its own. The kernel spreads new connections evenly over the sockets; with
one shared socket, the child that woke first accepted a whole burst (up to 100 connections at
a time), so after a restart or under a burst of clicks one process could carry most of the
load (``docs/benchmarks.md``, issue #7). SIGTERM/SIGINT stop them all, and so does the death of
one (no socket is left with nobody accepting on it).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from patient_data.bulk.limits import older_than_hours_refusal

APPLICATION = "ncp_asgi.asgi:application"
#: Seconds the children get to finish after SIGTERM before they are killed.
STOP_TIMEOUT = 10


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--bind", default="127.0.0.1", help="IPv4 address to listen on.")
    parser.add_argument("--workers", type=int, default=1, help="daphne processes (one socket).")
    parser.add_argument("--all-sessions", action="store_true")
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--older-than-hours", type=float, default=None, metavar="N")
    parser.add_argument(
        "--ignore-cleanup-errors",
        action="store_true",
        help="Serve even when the start-up cleanup failed.",
    )
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if refusal := older_than_hours_refusal(args.older_than_hours):
        parser.error(refusal)
    try:
        if ipaddress.ip_address(args.bind).version != 4:
            parser.error("--bind takes an IPv4 address (daphne --fd adopts IPv4 sockets)")
    except ValueError:
        parser.error(f"--bind {args.bind!r} is not an IP address")
    return args


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ncp_asgi.settings")
    import django

    django.setup()


def workers_refusal(workers: int) -> str | None:
    """Why ``workers`` processes cannot run with this configuration (None when they can)."""
    from django.conf import settings

    backend = settings.CHANNEL_LAYERS.get("default", {}).get("BACKEND", "")
    if workers > 1 and backend.endswith("InMemoryChannelLayer"):
        return (
            f"--workers {workers} refused: the in-memory channel layer lives inside one process, "
            "so the monitor's events and commands would not reach sockets served by the other "
            "workers. Set REDIS_URL (channels-redis) or run with --workers 1."
        )
    return None


def describe(args: argparse.Namespace) -> list[str]:
    """Start-up messages: database, channel layer, URL (never a password)."""
    from django.conf import settings
    from django.db import connection

    database = connection.settings_dict
    where = (
        f" on {database['HOST']}:{database['PORT'] or 'default port'}" if database["HOST"] else ""
    )
    layer = settings.CHANNEL_LAYERS.get("default", {})
    hosts = layer.get("CONFIG", {}).get("hosts", [])
    addresses = [host["address"] if isinstance(host, dict) else host for host in hosts]
    servers = ", ".join(_without_password(address) for address in addresses)
    return [
        f"Database: {connection.vendor} {database['NAME']}{where}",
        f"Channel layer: {layer.get('BACKEND', 'none')}" + (f" ({servers})" if servers else ""),
        f"Serving {APPLICATION} with daphne, {args.workers} worker(s): "
        f"http://{args.bind}:{args.port}/",
    ]


def _without_password(address: object) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(str(address))
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}" if parts.scheme else "-"


def run_cleanup(args: argparse.Namespace, out: TextIO) -> bool:
    """The start-up cleanup, in this process; True when it finished without errors."""
    from django.core.management import call_command
    from django.core.management.base import CommandError
    from django.db import DatabaseError

    options = {
        "all_sessions": args.all_sessions,
        "force": args.force,
        "dry_run": args.dry_run,
        "older_than_hours": args.older_than_hours,
    }
    try:
        call_command("startup_cleanup_patient_sessions", stdout=out, stderr=sys.stderr, **options)
    except CommandError as exc:
        out.write(f"Start-up cleanup failed: {exc}\n")
        return False
    except DatabaseError as exc:
        out.write(
            f"Start-up cleanup failed: database error ({type(exc).__name__}). "
            "Is the database reachable and migrated (python manage.py migrate)?\n"
        )
        return False
    return True


def bind_sockets(host: str, port: int, count: int = 1) -> list[socket.socket]:
    """``count`` listening sockets on one address, one per child (inheritable, so ``--fd``
    can adopt it), in one ``SO_REUSEPORT`` group; port 0: the first one's port for all. Where
    the platform has no ``SO_REUSEPORT``, one socket that every child shares."""
    spread = count > 1 and hasattr(socket, "SO_REUSEPORT")
    sockets: list[socket.socket] = []
    try:
        for _ in range(count if spread else 1):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if spread:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]
            sock.listen(1024)
            sock.set_inheritable(True)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def server_command(fd: int) -> list[str]:
    """One worker: daphne with the project's access log (``ncp_asgi.server``) on socket ``fd``.

    Behind the TLS proxy (``BEHIND_TLS_PROXY``) the client address is the one the proxy puts
    in X-Forwarded-For, so the per-address limits (sign-in lockout, cleanup rate limit) count
    clients, not the proxy. The proxy must set that header, not append to it.
    """
    from django.conf import settings

    command = [sys.executable, "-m", "ncp_asgi.server", "--fd", str(fd)]
    if settings.SECURE_PROXY_SSL_HEADER:
        command.append("--proxy-headers")
    return [*command, APPLICATION]


def serve(sockets: Sequence[socket.socket], workers: int) -> int:
    """Run ``workers`` daphne children until a signal or a child's death, each on its own
    socket of ``sockets`` (:func:`bind_sockets`), or all on the one socket given.

    Returns 0 after SIGTERM/SIGINT, 1 when a child ended on its own (the others are stopped).
    """
    env = {**os.environ, "NCP_WORKERS": str(workers)}
    fds = [sockets[number % len(sockets)].fileno() for number in range(workers)]
    children = [
        subprocess.Popen(server_command(fd), pass_fds=(fd,), env=env)  # noqa: S603 - fixed argv
        for fd in fds
    ]
    stopping = []

    def stop(signum, frame) -> None:
        stopping.append(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.1)
        _stop(children)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sock in sockets:
            sock.close()
    return 0 if stopping else 1


def _stop(children: list[subprocess.Popen]) -> None:
    for child in children:
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT
    for child in children:
        try:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    args = parse_args(argv)
    setup_django()
    refusal = workers_refusal(args.workers)
    if refusal:
        out.write(refusal + "\n")
        return 2
    out.write("NCP portal start-up: patient session cleanup first.\n")
    if not run_cleanup(args, out) and not args.ignore_cleanup_errors:
        out.write("The server was not started (--ignore-cleanup-errors starts it anyway).\n")
        return 1
    try:
        sockets = bind_sockets(args.bind, args.port, args.workers)
    except OSError as exc:
        out.write(f"Cannot listen on {args.bind}:{args.port}: {exc.strerror}.\n")
        return 2
    for line in describe(args):
        out.write(line + "\n")
    out.flush()
    return serve(sockets, args.workers)


if __name__ == "__main__":
    sys.exit(main())
