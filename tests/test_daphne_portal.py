"""End to end on daphne: what a clinician does in a browser, over real HTTP.

The production settings (DEBUG off) on a throw-away SQLite database in a temporary NCP_VAR_DIR:
log in, open a patient, check the page's protection, clear the patient data with the CSRF
token like the page's script does, and see a cross-site attempt refused.
"""

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


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "SESSION_ENGINE"}
    }
    env.update(
        DJANGO_SETTINGS_MODULE="ncp_asgi.settings",
        NCP_VAR_DIR=str(tmp_path_factory.mktemp("daphne-var")),
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(50),
        SECURE_COOKIES="0",
        PATIENT_LOG_LEVEL="WARNING",
    )
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=120)
    seed = ["seed_demo", "--patients", "3", "--password", PASSWORD, "--staff-password", PASSWORD]
    subprocess.run([*manage, *seed], cwd=ROOT, env=env, check=True, timeout=120)
    port = _free_port()
    command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
    daphne = subprocess.Popen(
        [*command, "ncp_asgi.asgi:application"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if daphne.poll() is not None or time.monotonic() > deadline:
                daphne.kill()
                pytest.fail("daphne did not start")
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
    daphne.terminate()
    daphne.wait(timeout=20)


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


def test_a_clinician_session_on_daphne(server):
    browser = Browser(server)
    status, _, page = browser.open("/accounts/login/")
    assert status == 200
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    status, _, page = browser.open(
        "/accounts/login/",
        {"csrfmiddlewaretoken": token, "username": "clinician", "password": PASSWORD},
    )
    assert status == 200 and "patient_session_cleanup.js" in page

    token = browser.cookie("csrftoken")
    status, _, page = browser.open(
        "/patients/", {"csrfmiddlewaretoken": token, "patient_id": "SYN-"}
    )
    assert status == 200
    link = re.search(r'href="(/patients/[0-9a-f]{32}/)">(SYN-[A-Z]{2}-\d{6})<', page)
    path, patient_id = link.groups()
    status, headers, page = browser.open(path)
    assert status == 200 and patient_id in page
    assert headers["X-Patient-Data-Page"] == "true"
    assert headers["Cache-Control"] == "no-cache, no-store, must-revalidate"
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]

    status = json.loads(browser.open("/api/session-status/")[2])
    assert status["has_patient_data"] is True and status["items"] >= 6

    forged = browser.post_api("/api/clear-patient-session/", token=None)
    assert forged[0] == 403 and forged[2]["error"] == "csrf_failed"

    status_code, headers, body = browser.post_api(
        "/api/clear-patient-session/", token=browser.cookie("csrftoken")
    )
    assert status_code == 200
    assert body == {"success": True, "items_cleared": status["items"]}
    assert headers["Clear-Site-Data"] == '"cache", "storage"'
    after = json.loads(browser.open("/api/session-status/")[2])
    assert after["has_patient_data"] is False and after["authenticated"] is True
