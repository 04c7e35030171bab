"""Real daphne processes for end-to-end tests of the live side, and a small socket client.

The servers share the test database (the suite's own, PostgreSQL or the SQLite file) and a
Redis (channel layer, cache, presence) under a key prefix of their own; DEBUG and SECRET_KEY
are set explicitly, short presence settings come through the environment.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

from django.db import connection

from tests.daphne_support import start_daphne
from tests.redis_server import free_port

ROOT = Path(__file__).resolve().parent.parent
SECRET_KEY = "end-to-end-" + "k" * 50
GRACE = 2
HEARTBEAT = 1


def database_url() -> str:
    """The test database as the servers must reach it."""
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{Path(settings['NAME']).resolve()}"
    user = quote(settings["USER"] or "")
    password = f":{quote(settings['PASSWORD'])}" if settings["PASSWORD"] else ""
    host = f"{settings['HOST'] or '127.0.0.1'}:{settings['PORT'] or 5432}"
    return f"postgres://{user}{password}@{host}/{settings['NAME']}"


class Daphne:
    """One daphne process on a free 127.0.0.1 port; its log is kept for assertions."""

    def __init__(self, redis_url: str, prefix: str, log: Path) -> None:
        self.port = free_port()
        self.log = log
        env = {k: v for k, v in os.environ.items() if k != "SESSION_ENGINE"}
        env.update(
            DJANGO_SETTINGS_MODULE="ncp_asgi.settings",
            DEBUG="0",
            SECRET_KEY=SECRET_KEY,
            SECURE_COOKIES="0",
            DATABASE_URL=database_url(),
            REDIS_URL=redis_url,
            NCP_REDIS_PREFIX=prefix,
            PATIENT_DISCONNECT_GRACE=str(GRACE),
            PATIENT_PRESENCE_HEARTBEAT=str(HEARTBEAT),
            PATIENT_LOG_LEVEL="INFO",
        )
        try:
            self.process = start_daphne(self.port, env, log, timeout=60)
        except RuntimeError as error:
            raise RuntimeError(f"{error}:\n{log.read_text()}") from None

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        """``kill -9``: no disconnect handler, no leave, nothing cleaned up by the process."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=20)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def logged(self) -> str:
        return self.log.read_text(errors="replace")


class Tab:
    """A browser tab's socket: the frames it got, in order."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.frames: list[dict] = []

    async def next(self, frame_type: str, timeout: float = 20) -> dict:
        """The next frame of ``frame_type`` (earlier frames of other types are kept)."""

        async def wait() -> dict:
            while True:
                frame = json.loads(await self.ws.recv())
                self.frames.append(frame)
                if frame.get("type") == frame_type:
                    return frame

        return await asyncio.wait_for(wait(), timeout)

    async def close(self) -> None:
        await self.ws.close()


async def open_tab(server: Daphne, session_key: str) -> Tab:
    from websockets.asyncio.client import connect

    ws = await connect(
        f"ws://127.0.0.1:{server.port}/ws/patient-session/",
        additional_headers={"Cookie": f"sessionid={session_key}"},
        origin=server.origin,
        open_timeout=10,
    )
    return Tab(ws)


async def eventually(check, timeout: float = 60, interval: float = 0.2):
    """Poll the async ``check`` until it returns something true; that value, or the last."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(interval)
