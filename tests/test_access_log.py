"""The access log: JSON lines a SIEM reads, paths without their query strings."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import startup_with_cleanup
from ncp_asgi.server import entry

ROOT = Path(__file__).resolve().parent.parent
QUERY = "patient_id=SYN-XX-000042&family_name=Synthname"


def test_an_http_entry_keeps_the_path_and_drops_the_query():
    details = {
        "path": f"/patients/?{QUERY}",
        "status": 200,
        "method": "GET",
        "client": "192.0.2.1:5555",
        "time_taken": 0.0123,
        "size": 321,
    }
    record = entry("http", "complete", details)
    assert record["path"] == "/patients/"
    assert record["query_redacted"] is True
    assert (record["method"], record["status"], record["bytes"]) == ("GET", 200, 321)
    assert record["duration_ms"] == 12.3
    assert "SYN-XX" not in json.dumps(record) and "Synthname" not in json.dumps(record)


def test_socket_entries_drop_the_query_too_and_other_actions_are_not_logged():
    record = entry("websocket", "connected", {"path": f"/ws/monitor/?{QUERY}", "client": None})
    assert (record["event"], record["path"], record["query_redacted"]) == (
        "ws_connected",
        "/ws/monitor/",
        True,
    )
    assert entry("http", "started", {"path": "/"}) is None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_served_portal_logs_json_lines_without_query_strings(tmp_path):
    """What startup_with_cleanup.py (hence make run) starts, for real: its children's log."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        NCP_VAR_DIR=str(tmp_path),
        DEBUG="0",
        SECRET_KEY="access-log-test-" + "k" * 50,
        SESSION_ENGINE="patient_data.sessions.signed_cookies",  # no database needed
    )
    code = (
        "import sys, startup_with_cleanup as s; s.setup_django(); "
        f"sys.exit(s.serve(s.bind_sockets('127.0.0.1', {port}), 1))"
    )
    log = tmp_path / "stdout.log"
    with log.open("w") as out:
        parent = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=out)
        try:
            url = f"http://127.0.0.1:{port}/_test/plain/?{QUERY}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(url, timeout=2) as response:
                        assert response.status == 200
                    break
                except OSError:
                    assert time.monotonic() < deadline, "the server did not answer"
                    time.sleep(0.2)
        finally:
            parent.send_signal(signal.SIGTERM)
            parent.wait(timeout=30)
    text = log.read_text()
    assert "SYN-XX" not in text and "Synthname" not in text
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    served = [r for r in records if r["path"] == "/_test/plain/"]
    assert served and served[0]["status"] == 200 and served[0]["query_redacted"] is True


def test_workers_run_the_access_logged_server_and_trust_the_proxy_only_behind_one(settings):
    settings.SECURE_PROXY_SSL_HEADER = None
    command = startup_with_cleanup.server_command(7)
    assert command[1:5] == ["-m", "ncp_asgi.server", "--fd", "7"]
    assert "--proxy-headers" not in command
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert "--proxy-headers" in startup_with_cleanup.server_command(7)
