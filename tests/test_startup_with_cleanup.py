"""``startup_with_cleanup.py`` (original defect 12): in-process cleanup, then daphne children
each on its own socket of one port, stopped cleanly by SIGTERM."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from django.test import override_settings

import startup_with_cleanup
from patient_data import epoch
from tests.bulk_support import (
    engine_fixture,  # noqa: F401 - the "engine" fixture
    load,
    make_session,
)

ROOT = Path(startup_with_cleanup.__file__).resolve().parent
IN_MEMORY = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


@pytest.fixture
def no_serving(monkeypatch):
    """Replaces the daphne parent: records the worker count, closes the sockets."""
    served = []

    def fake_serve(sockets, workers):
        served.append(workers)
        for sock in sockets:
            sock.close()
        return 0

    monkeypatch.setattr(startup_with_cleanup, "serve", fake_serve)
    return served


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("engine", ["db"], indirect=True)
def test_cleanup_runs_in_process_then_the_server_starts(engine, no_serving):
    anonymous = make_session(engine)
    out = io.StringIO()
    port = free_port()
    code = startup_with_cleanup.main(["--port", str(port), "--force"], out=out)
    assert code == 0
    assert no_serving == [1]
    text = out.getvalue()
    assert "Server startup patient session cleanup completed: 1 sessions, 2 items removed" in text
    assert "Database: " in text
    assert "Channel layer: " in text
    assert f"http://127.0.0.1:{port}/" in text
    assert "patient_summary" not in load(engine, anonymous)
    epoch.forget()
    assert epoch.current() == 1


@pytest.mark.django_db
def test_several_workers_need_redis(no_serving):
    out = io.StringIO()
    with override_settings(CHANNEL_LAYERS=IN_MEMORY):
        assert startup_with_cleanup.main(["--workers", "2"], out=out) == 2
    assert "REDIS_URL" in out.getvalue()
    assert no_serving == []


@pytest.mark.django_db(transaction=True)
def test_failed_cleanup_keeps_the_server_down_unless_ignored(no_serving):
    locmem = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    with override_settings(SESSION_ENGINE="patient_data.sessions.cache", CACHES=locmem):
        out = io.StringIO()
        assert startup_with_cleanup.main(["--port", str(free_port())], out=out) == 1
        assert "Start-up cleanup failed" in out.getvalue()
        assert "was not started" in out.getvalue()
        assert no_serving == []
        args = ["--port", str(free_port()), "--ignore-cleanup-errors"]
        startup_with_cleanup.main(args, out=io.StringIO())
    assert no_serving == [1]


@pytest.mark.parametrize("argv", [["--workers", "0"], ["--bind", "::1"], ["--bind", "host"]])
def test_usage_errors(argv):
    with pytest.raises(SystemExit) as caught:
        startup_with_cleanup.parse_args(argv)
    assert caught.value.code == 2


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


def _get(url: str, timeout: float = 20.0) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - local test URL
                return response.status, response.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_each_worker_gets_a_socket_of_its_own_on_one_port():
    sockets = startup_with_cleanup.bind_sockets("127.0.0.1", 0, 3)
    try:
        ports = {sock.getsockname()[1] for sock in sockets}
        assert len(sockets) == 3 and len(ports) == 1  # port 0: the first one's for all
        for sock in sockets:
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
            assert sock.get_inheritable()
    finally:
        for sock in sockets:
            sock.close()


def test_one_worker_gets_one_plain_socket():
    (sock,) = startup_with_cleanup.bind_sockets("127.0.0.1", 0)
    try:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 0
    finally:
        sock.close()


def test_a_port_taken_by_another_socket_is_refused_and_nothing_is_left_open():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        with pytest.raises(OSError):
            startup_with_cleanup.bind_sockets("127.0.0.1", taken.getsockname()[1], 2)
    finally:
        taken.close()


def test_two_daphne_workers_share_the_connections_and_stop_on_sigterm(tmp_path):
    """The fd parent for real: two daphne children, each on its own socket of one port; new
    connections go to both; SIGTERM, clean exit."""
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "NCP_VAR_DIR": str(tmp_path),
        "SESSION_ENGINE": "patient_data.sessions.signed_cookies",  # no database needed
    }
    env.pop("DATABASE_URL", None)
    code = (
        "import sys, startup_with_cleanup as s; s.setup_django(); "
        f"sys.exit(s.serve(s.bind_sockets('127.0.0.1', {port}, 2), 2))"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env)
    try:
        status, body = _get(f"http://127.0.0.1:{port}/_test/plain/")
        assert (status, body) == (200, "plain")
        children = _children(parent.pid)
        assert len(children) == 2
        # New connections, each from its own port: the kernel hashes them over both sockets.
        served = {_get(f"http://127.0.0.1:{port}/_test/pid/")[1] for _ in range(40)}
        assert served == {str(child) for child in children}
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=20) == 0
        assert not any(Path(f"/proc/{child}").exists() for child in children)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


@pytest.mark.django_db(transaction=True)
def test_file_sessions_start_on_a_fresh_folder(no_serving, tmp_path):
    """Issue 9, item 20: a fresh NCP_VAR_DIR has no sessions/ folder yet."""
    from patient_data.sessions.file import SessionStore

    folder = tmp_path / "sessions"
    engine = "patient_data.sessions.file"
    with override_settings(SESSION_ENGINE=engine, SESSION_FILE_PATH=str(folder)):
        previous = SessionStore.__dict__.get("_storage_path")
        if previous is not None:
            del SessionStore._storage_path  # checked again in this configuration
        try:
            out = io.StringIO()
            assert startup_with_cleanup.main(["--port", str(free_port())], out=out) == 0
        finally:
            del SessionStore._storage_path
            if previous is not None:
                SessionStore._storage_path = previous
    assert folder.is_dir()
    assert no_serving == [1]
