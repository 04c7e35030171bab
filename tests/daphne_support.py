"""A real daphne process on a throw-away SQLite database, and urllib as a minimal browser."""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.cookiejar import CookieJar
from pathlib import Path
from urllib.parse import urlencode

import pytest

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "synthetic-" + secrets.token_hex(8)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def production_env(var_dir: Path, **extra: str) -> dict[str, str]:
    """The production settings (DEBUG off) on SQLite in ``var_dir``, nothing from the suite's
    database, Redis or engine choice."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "SESSION_ENGINE"}
    }
    env.update(
        DJANGO_SETTINGS_MODULE="ncp_asgi.settings",
        NCP_VAR_DIR=str(var_dir),
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(50),
        SECURE_COOKIES="0",
        PATIENT_LOG_LEVEL="WARNING",
        **extra,
    )
    return env


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "manage.py", *args]
    return subprocess.run(
        command, cwd=ROOT, env=env, check=True, timeout=120, capture_output=True, text=True
    )


def start_daphne(
    port: int, env: dict[str, str], log: Path | None = None, timeout: float = 30
) -> subprocess.Popen:
    """``daphne ncp_asgi.asgi:application`` on 127.0.0.1:``port``, once it accepts connections
    (output to ``log``, or dropped); RuntimeError when it exits or does not listen in time."""
    command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
    out = log.open("ab") if log is not None else subprocess.DEVNULL
    try:
        process = subprocess.Popen(
            [*command, "ncp_asgi.asgi:application"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    finally:
        if log is not None:
            out.close()
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                process.wait()
                raise RuntimeError(f"daphne did not start on port {port}") from None
            time.sleep(0.1)


@contextmanager
def daphne(env: dict[str, str]) -> Iterator[str]:
    """Migrate, seed three synthetic patients, serve; yields the base URL."""
    manage(env, "migrate", "-v0")
    manage(
        env, "seed_demo", "--patients", "3", "--password", PASSWORD, "--staff-password", PASSWORD
    )
    port = _free_port()
    try:
        process = start_daphne(port, env)
    except RuntimeError as error:
        pytest.fail(str(error))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=20)


class Browser:
    """Cookies kept, redirects followed: urllib as a minimal browser."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.cookies = CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies))

    def open(self, path: str, data: dict | None = None, headers: dict | None = None):
        body = urlencode(data).encode() if data is not None else None
        url = self.base + path  # always http://127.0.0.1:<port>
        request = urllib.request.Request(url, data=body, headers=headers or {})  # noqa: S310
        try:
            response = self.opener.open(request, timeout=20)
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read().decode()
        return response.status, dict(response.headers), response.read().decode()

    def cookie(self, name: str) -> str:
        return next(cookie.value for cookie in self.cookies if cookie.name == name)

    def post_api(self, path: str, token: str | None) -> tuple[int, dict, dict]:
        headers = {"X-CSRFToken": token} if token else {}
        status, response_headers, body = self.open(path, data={}, headers=headers)
        return status, response_headers, json.loads(body)

    def status(self) -> dict:
        return json.loads(self.open("/api/session-status/")[2])

    def log_in(self) -> str:
        """Signs in as the demo clinician; returns the page after the login."""
        status, _, page = self.open("/accounts/login/")
        assert status == 200
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        status, _, page = self.open(
            "/accounts/login/",
            {"csrfmiddlewaretoken": token, "username": "clinician", "password": PASSWORD},
        )
        assert status == 200
        return page

    def open_a_patient(self) -> tuple[str, str, dict, str]:
        """Searches and opens the first synthetic patient: (path, id, headers, page)."""
        token = self.cookie("csrftoken")
        status, _, page = self.open(
            "/patients/", {"csrfmiddlewaretoken": token, "patient_id": "SYN-"}
        )
        assert status == 200
        link = re.search(r'href="(/patients/[0-9a-f]{32}/)">(SYN-[A-Z]{2}-\d{6})<', page)
        path, patient_id = link.groups()
        status, headers, page = self.open(path)
        assert status == 200
        return path, patient_id, headers, page
