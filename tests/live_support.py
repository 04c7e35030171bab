"""Shared helpers for the live-side tests: sockets that record and scan every frame.

Every frame any live test receives goes through :func:`scan`: it may carry no synthetic
patient value and no raw session key (keys of every session the tests opened are collected).
Import the ``scanned_frames`` fixture into a test module to check them once more at teardown.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from channels import DEFAULT_CHANNEL_LAYER
from channels.layers import InMemoryChannelLayer, channel_layers, get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import AsyncClient

from monitor import fanout
from ncp_asgi.asgi import application
from patient_data import index
from patient_data.registry import META_KEY

#: What the test views store (tests/urls.py) and demo-like values: none may reach a frame.
PATIENT_VALUES = ("SYNTH", "SYN-XX", "ClinicalDocument")
RECORDED: list[str] = []
SESSION_KEYS: set[str] = set()
ORIGIN = "http://127.0.0.1"


def scan(text: str) -> None:
    """Fail on a frame carrying a patient value or a raw session key."""
    for value in PATIENT_VALUES:
        assert value not in text, f"patient value {value!r} in a frame"
    for key in SESSION_KEYS:
        assert key not in text, "a raw session key in a frame"


@pytest.fixture
async def scanned_frames():
    """The frames of one test, scanned again at its end; around it, a fresh channel layer.

    Each test runs its own event loop: the layer (its locks, pools and channels) and this
    process's fan-out listener start afresh, and are closed inside the test's loop.
    """
    channel_layers.backends.clear()
    start = len(RECORDED)
    yield RECORDED
    await fanout.astop()
    layer = channel_layers.backends.pop(DEFAULT_CHANNEL_LAYER, None)
    if hasattr(layer, "close_pools"):  # channels-redis: its connections belong to this loop
        await layer.close_pools()
    elif layer is not None:
        await layer.flush()
    for text in RECORDED[start:]:
        scan(text)


class Socket:
    """A WebSocket to the real ASGI application (Origin check, session and auth middleware)."""

    def __init__(self, path: str, session_key: str | None = None, origin: str = ORIGIN) -> None:
        headers = [(b"origin", origin.encode()), (b"host", b"127.0.0.1")]
        if session_key:
            SESSION_KEYS.add(session_key)
            cookie = f"{settings.SESSION_COOKIE_NAME}={session_key}"
            headers.append((b"cookie", cookie.encode()))
        self.communicator = WebsocketCommunicator(application, path, headers=headers)
        self.frames: list[dict[str, Any]] = []

    async def connect(self) -> bool:
        connected, _ = await self.communicator.connect(timeout=5)
        return connected

    async def send(self, body: dict[str, Any] | str | bytes) -> None:
        if isinstance(body, bytes):
            await self.communicator.send_to(bytes_data=body)
        else:
            text = body if isinstance(body, str) else json.dumps(body)
            await self.communicator.send_to(text_data=text)

    async def next(self, timeout: float = 5) -> dict[str, Any]:
        """The next frame as a dict, or ``{"closed": code}`` when the server closed."""
        output = await self.communicator.receive_output(timeout)
        if output["type"] == "websocket.close":
            return {"closed": output.get("code")}
        RECORDED.append(output["text"])
        scan(output["text"])
        frame = json.loads(output["text"])
        self.frames.append(frame)
        return frame

    async def expect(self, kind: str, timeout: float = 5) -> dict[str, Any]:
        """The next frame of type ``kind`` (others in between are recorded and skipped)."""
        while True:
            frame = await self.next(timeout)
            assert "closed" not in frame, f"closed ({frame['closed']}) while waiting for {kind}"
            if frame["type"] == kind:
                return frame

    async def expect_each(self, *kinds: str, timeout: float = 5) -> dict[str, dict[str, Any]]:
        """The next frame of each type in ``kinds``, in whatever order they come (a staff
        socket's events come through the process's fan-out, not behind its own replies)."""
        found: dict[str, dict[str, Any]] = {}
        while len(found) < len(kinds):
            frame = await self.next(timeout)
            assert "closed" not in frame, f"closed ({frame['closed']}) while waiting for {kinds}"
            if frame["type"] in kinds:
                found.setdefault(frame["type"], frame)
        return found

    async def closed_with(self, timeout: float = 5) -> int | None:
        """Read frames until the server closes; the close code."""
        while "closed" not in (frame := await self.next(timeout)):
            pass
        return frame["closed"]

    async def nothing(self, timeout: float = 0.5) -> bool:
        return await self.communicator.receive_nothing(timeout)

    async def close(self) -> None:
        await self.communicator.disconnect()


async def members(group: str) -> set[str]:
    """The channels the layer (in memory, or on Redis) counts in ``group``."""
    layer = get_channel_layer()
    if hasattr(layer, "groups"):
        return set(layer.groups.get(group, {}))
    redis = layer.connection(layer.consistent_hash(group))
    return {member.decode() for member in await redis.zrange(layer._group_key(group), 0, -1)}


async def signed_in(user: Any, *, patient_data: bool = True) -> AsyncClient:
    """An async client logged in as ``user``, holding the test patient data if asked."""
    client = AsyncClient()
    await client.aforce_login(user)
    if patient_data:
        assert (await client.get("/_test/store/")).status_code == 200
    SESSION_KEYS.add(session_key(client))
    return client


def session_key(client: AsyncClient) -> str:
    return client.cookies[settings.SESSION_COOKIE_NAME].value


async def session_socket(client: AsyncClient) -> Socket:
    socket = Socket("/ws/patient-session/", session_key(client))
    assert await socket.connect()
    await socket.expect("session.state")
    return socket


async def staff_user(username: str = "staff", *, act: bool = True) -> Any:
    user = await get_user_model().objects.acreate(username=username, is_staff=True)
    codenames = ["view_session_monitor", *(["cleanup_any_session"] if act else [])]
    permissions = Permission.objects.filter(codename__in=codenames)
    await user.user_permissions.aadd(*[permission async for permission in permissions])
    return user


async def monitor_socket(client: AsyncClient) -> Socket:
    socket = Socket("/ws/monitor/", session_key(client))
    assert await socket.connect()
    await socket.expect("sessions.snapshot")
    return socket


async def rewrite(client: AsyncClient, **meta: Any) -> None:
    """Change the stored bookkeeping of the client's session (e.g. move ``seen`` back)."""
    store = index.store(session_key(client))
    data = dict(await store.aitems())
    await store.aset(META_KEY, {**data[META_KEY], **meta})
    await store.asave()


class LayerGoneAway(InMemoryChannelLayer):
    """An in-memory layer whose receive fails shortly after a socket opened (Redis away)."""

    async def receive(self, channel: str) -> dict[str, Any]:
        await asyncio.sleep(0.3)
        raise ConnectionError("the channel layer went away")


class LayerDown(InMemoryChannelLayer):
    """An in-memory layer that cannot be reached at all."""

    async def group_add(self, group: str, channel: str) -> None:
        raise ConnectionError("the channel layer is down")
