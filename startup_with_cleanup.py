#!/usr/bin/env python
"""Start the NCP portal: the start-up patient-session cleanup, then daphne.

    python startup_with_cleanup.py [--port 8080] [--bind 127.0.0.1] [--all-sessions] [--force]
        [--dry-run] [--older-than-hours 12] [--workers N] [--ignore-cleanup-errors]

The cleanup runs in this process (``startup_cleanup_patient_sessions``: the patient-data epoch
is advanced, then stored sessions are swept); if it fails the server does not start unless
``--ignore-cleanup-errors`` is given. daphne has no workers option: this process binds the
socket once and starts N ``daphne --fd`` children on it. SIGTERM/SIGINT stop them all.
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


def bind_socket(host: str, port: int) -> socket.socket:
    """The listening socket the children share (inheritable, so ``--fd`` can adopt it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def serve(sock: socket.socket, workers: int) -> int:
    """Run ``workers`` daphne children on ``sock`` until a signal or a child's death.

    Returns 0 after SIGTERM/SIGINT, 1 when a child ended on its own (the others are stopped).
    """
    fd = sock.fileno()
    command = [sys.executable, "-m", "daphne", "--fd", str(fd), APPLICATION]
    env = {**os.environ, "NCP_WORKERS": str(workers)}
    children = [subprocess.Popen(command, pass_fds=(fd,), env=env) for _ in range(workers)]  # noqa: S603 - fixed argv
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
        sock = bind_socket(args.bind, args.port)
    except OSError as exc:
        out.write(f"Cannot listen on {args.bind}:{args.port}: {exc.strerror}.\n")
        return 2
    for line in describe(args):
        out.write(line + "\n")
    out.flush()
    return serve(sock, args.workers)


if __name__ == "__main__":
    sys.exit(main())
