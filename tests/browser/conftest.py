"""Real-browser fixtures: Debian's Chromium driven by Playwright against a real daphne.

These tests run in their own pytest invocation (``pytest tests/browser -m browser``): sync
Playwright keeps an event loop in the main thread, which breaks pytest-asyncio tests run after
it in the same process (shared/TRAPS.md). Without Playwright or Chromium they skip, saying why.

The server is ``daphne ncp_asgi.asgi:application`` in a subprocess with DEBUG off, its own
SQLite database (migrated and seeded) under a temporary NCP_VAR_DIR, and the test timings
given through ``tests/browser/server_settings.py``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core import signing

from patient_data.refs import session_ref
from patient_data.registry import get_registry
from tests.daphne_support import start_daphne

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "var" / "browser-artifacts"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "synthetic-" + secrets.token_hex(8)
PATIENTS = 8
SESSION_SALT = "django.contrib.sessions.SessionStore"
#: Timings of the default server: long enough that nothing times out during a test.
DEFAULT_TIMINGS: dict[str, Any] = {}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """One daphne process on a fixed port; it can be stopped and started again."""

    def __init__(
        self, var_dir: Path, settings: dict[str, Any], redis_url: str | None = None
    ) -> None:
        self.var_dir = var_dir
        self.port = _free_port()
        self.secret = secrets.token_urlsafe(50)
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"DATABASE_URL", "REDIS_URL", "SESSION_ENGINE", "DJANGO_SETTINGS_MODULE"}
        }
        self.env.update(
            DJANGO_SETTINGS_MODULE="tests.browser.server_settings",
            NCP_TEST_SETTINGS=json.dumps(settings),
            NCP_VAR_DIR=str(var_dir),
            DEBUG="0",
            SECRET_KEY=self.secret,
            SECURE_COOKIES="0",
            PATIENT_LOG_LEVEL="WARNING",
        )
        #: With ``redis_url``: channels-redis, presence and the cache on Redis, as deployed,
        #: under a prefix of this server's own.
        self.redis_prefix = f"ncp_browser_{secrets.token_hex(4)}" if redis_url else None
        if redis_url:
            self.env.update(REDIS_URL=redis_url, NCP_REDIS_PREFIX=self.redis_prefix)
        self.process: subprocess.Popen | None = None
        self.log = var_dir / "daphne.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def prepare(self) -> None:
        manage = [sys.executable, "manage.py"]
        run = {"cwd": ROOT, "env": self.env, "check": True, "timeout": 180}
        subprocess.run([*manage, "migrate", "-v0"], **run)
        seed = ["seed_demo", "--patients", str(PATIENTS)]
        subprocess.run(
            [*manage, *seed, "--password", PASSWORD, "--staff-password", PASSWORD], **run
        )

    def start(self) -> None:
        try:
            self.process = start_daphne(self.port, self.env, self.log)
        except RuntimeError as error:
            pytest.fail(f"{error}: see {self.log}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def _query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with sqlite3.connect(self.var_dir / "db.sqlite3", timeout=20) as db:
            return db.execute(sql, params).fetchall()

    def session(self, session_key: str) -> dict | None:
        """The stored session (None when it is gone), decoded as Django does."""
        rows = self._query(
            "SELECT session_data FROM django_session WHERE session_key = ?", (session_key,)
        )
        if not rows:
            return None
        return signing.loads(
            rows[0][0], key=self.secret, salt=SESSION_SALT, serializer=signing.JSONSerializer
        )

    def patient_keys(self, session_key: str) -> list[str]:
        return get_registry().patient_keys(list(self.session(session_key) or {}))

    def audit(self, session_key: str) -> list[dict]:
        """This session's cleanup rows, oldest first (compared by keyed hash, like the audit)."""
        with signing_settings(self.secret):
            ref = session_ref(session_key)
        rows = self._query(
            "SELECT action, reason, source, items_cleared, client_hint "
            "FROM patient_data_cleanupevent "
            "WHERE session_ref = ? ORDER BY id",
            (ref,),
        )
        return [
            dict(
                zip(("action", "reason", "source", "items_cleared", "client_hint"), r, strict=True)
            )
            for r in rows
        ]


def signing_settings(secret: str):
    """The server's SECRET_KEY for the keyed hash of session keys."""
    from django.test import override_settings

    return override_settings(SECRET_KEY=secret, PATIENT_SESSION_HASH_KEY=None)


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("browser tests need the playwright package (pip install playwright)")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"browser tests need Chromium at {CHROMIUM} (apt-get install -y chromium)")
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def start_server(tmp_path_factory) -> Iterator[Any]:
    """``start_server(redis_url=None, **settings)``: a migrated, seeded daphne with these
    settings (on Redis with ``redis_url``)."""
    servers: list[Server] = []

    def start(redis_url: str | None = None, **settings: Any) -> Server:
        server = Server(tmp_path_factory.mktemp("daphne-var"), settings, redis_url)
        servers.append(server)
        server.prepare()
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def server(start_server, chromium) -> Server:
    return start_server(**DEFAULT_TIMINGS)


class Console:
    """Console errors and uncaught exceptions of every page of a browser context."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.allowed: list[str] = []

    def watch(self, page) -> None:
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.errors.append(f"{page.url}: uncaught {exc}"))

    def _on_console(self, message) -> None:
        if message.type == "error":
            self.errors.append(f"{message.location.get('url')}: {message.text}")

    def allow(self, text: str) -> None:
        """An error the test provokes on purpose (e.g. the 403 of a stale form)."""
        self.allowed.append(text)

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(text in e for text in self.allowed)]


@pytest.fixture
def console() -> Console:
    return Console()


@pytest.fixture
def new_context(chromium, server, console) -> Iterator[Any]:
    """``new_context(**options)``: a fresh browser profile; no console error may occur."""
    contexts = []

    def make(base: Server | None = None, **options: Any):
        context = chromium.new_context(base_url=(base or server).url, **options)
        context.set_default_timeout(10_000)
        context.on("page", console.watch)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()
    assert console.unexpected() == []


@pytest.fixture
def page(new_context):
    return new_context().new_page()


AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]


def axe_violations(page) -> list[str]:
    """axe-core (bundled by axe-playwright-python) over the page as it is now."""
    from axe_playwright_python.sync_playwright import Axe

    # Colours are judged as they end up, not halfway through Bootstrap's 0.15 s transitions
    # (which it turns off for reduced motion).
    page.emulate_media(reduced_motion="reduce")
    results = Axe().run(page, options={"runOnly": {"type": "tag", "values": AXE_TAGS}})
    return [
        f"{v['id']}: {[n['target'] for n in v['nodes']]}" for v in results.response["violations"]
    ]


def screenshot(page, name: str, *, full_page: bool = True) -> Path:
    """Saved under var/browser-artifacts/ (ignored by git), to be looked at.

    A full-page capture re-emulates the device and drops touch emulation meanwhile: phone
    pages are captured as the viewport shows them.
    """
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def session_key(page) -> str:
    return next(c["value"] for c in page.context.cookies() if c["name"] == "sessionid")


def log_in(page, username: str = "clinician") -> None:
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/patients/")


def search(page, patient_id: str = "SYN-") -> None:
    page.goto("/patients/")
    page.get_by_label("Patient ID").fill(patient_id)
    with page.expect_navigation():
        page.get_by_role("button", name="Search").click()


def open_patient(page, index: int = 0) -> str:
    """Open the ``index``-th search result; returns its patient ID."""
    link = page.locator("[data-patient-data] tbody a").nth(index)
    patient_id = link.inner_text()
    with page.expect_navigation():
        link.click()
    return patient_id


def without_socket(page) -> None:
    """Every socket the page opens is refused: its commands must go over HTTP."""
    page.route_web_socket(re.compile(r"/ws/"), lambda socket: socket.close(code=1011))


def log_in_with_patient(page, username: str = "clinician") -> str:
    log_in(page, username)
    search(page)
    return open_patient(page)
