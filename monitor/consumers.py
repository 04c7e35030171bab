"""The two sockets, wiring the small modules together: ``auth`` (handshake), ``protocol``
(frames), ``commands`` (what a command does), ``state`` (state frames), ``timers``
(server-pushed timeouts), ``presence`` (open tabs) and ``fanout`` (bulk batches, and every
session's events for the staff sockets)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer

from monitor import auth, commands, fanout, presence, protocol, state, timers
from monitor.sessions import Identity, SessionTarget
from patient_data import events
from patient_data.conf import conf
from patient_data.models import CleanupEvent

logger = logging.getLogger("monitor.consumers")

CLOSE_ENDED = 4001
CLOSE_SIGNED_OUT = 4003
CLOSE_POLICY = 4008
CLOSE_ERROR = 1011
#: Seconds a socket that ended by a failure spends leaving its groups (Redis may be away).
LEAVE_GROUPS_TIMEOUT = 2.0
#: What a server raises on a send to a socket its client has closed: ASGI asks for an
#: ``OSError`` (uvicorn), daphne passes autobahn's ``Disconnected`` through.
GONE: tuple[type[Exception], ...] = (OSError,)
try:
    from autobahn.exception import Disconnected as _AutobahnDisconnected
except ImportError:  # another ASGI server than daphne
    pass
else:
    GONE += (_AutobahnDisconnected,)
#: At most this many buffered messages of the channel layer handled after one (``dispatch``).
DRAIN_AT_ONCE = 50
#: Codes of frames a working page never sends: many of them close the socket.
BAD_FRAMES = frozenset({"bad_json", "binary_not_supported", "too_large", "unknown_type"})


def cleanup_frame(event: dict[str, Any]) -> tuple[str, bool]:
    """The frame for a cleanup event, and whether it ended the session."""
    ended = event.get("action") == CleanupEvent.Action.END_SESSION
    fields = {key: event.get(key) for key in ("reason", "source", "items_cleared", "keys")}
    if event.get("session_ref", "-") == "-":  # a bulk run's summary (monitor only)
        text = protocol.frame("sessions.cleared", sessions=event.get("sessions", 0), **fields)
        return text, False
    kind = "session.ended" if ended else "session.cleared"
    if event.get("seen") is not None:  # the request that cleared was activity too
        fields["activity"] = True
    return protocol.frame(kind, session=event["session_ref"], **fields), ended


def activity_frame(event: dict[str, Any]) -> str:
    left = conf.PATIENT_SESSION_TIMEOUT * 60 - (time.time() - event["seen"])
    return protocol.frame(
        "session.activity",
        session=event["session_ref"],
        idle_seconds_left=round(left, 1),
        items=event.get("items"),
    )


def stored_frame(event: dict[str, Any]) -> str:
    seen = event.get("seen")
    left = None if seen is None else conf.PATIENT_SESSION_TIMEOUT * 60 - (time.time() - seen)
    return protocol.frame(
        "session.stored",
        session=event["session_ref"],
        user=event["user"],
        items=event["items"],
        keys=event["keys"],
        last_activity=seen,
        idle_seconds_left=None if left is None else round(max(0.0, left), 1),
    )


def presence_frame(event: dict[str, Any]) -> str:
    return protocol.frame(
        "presence.changed", session=event["session_ref"], open_tabs=event["open_tabs"]
    )


def forget_loaded_session(scope: dict[str, Any]) -> None:
    """Drop what the handshake loaded of the session (its patient data among it): an open
    socket decides on the session as stored now (``SessionTarget``), never on this copy, so
    it needs not keep it for its lifetime. Read again, it would simply be loaded again."""
    session = scope.get("session")
    session = getattr(session, "_wrapped", session)  # Channels' lazy object, if any
    for name in ("_session_cache", "_as_loaded"):
        with contextlib.suppress(AttributeError, TypeError):
            delattr(session, name)


class _LiveSocket(AsyncWebsocketConsumer):
    """What both sockets share: frame intake with the rate limit, one answer per command."""

    command_types: frozenset[str] = frozenset()
    staff = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.identity: Identity | None = None
        self.closed = False
        self.attached = False  # to this process's timer of its session
        self.joined = False  # counted by presence
        self.limit = protocol.RateLimit(*conf.PATIENT_SOCKET_RATE_LIMIT)

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels closes old database connections before every message, a hop through the
        one sync thread per frame (TRAPS.md); the commands that use the database do it.

        Channels' loop (``await_many_dispatch``) waits for each message in a task of its own:
        two or three turns of the event loop per message. A staff socket gets every session's
        events, a hundred a second at a hundred cleanups a second, and on a busy loop it fell
        seconds behind. So after a message of the channel layer, the messages its pump has
        buffered for this socket meanwhile are handled at once, in their order (at most
        ``DRAIN_AT_ONCE``; a command from the browser waits no longer than that)."""
        await self._handle(message)
        if message["type"].startswith("websocket."):
            return
        take = getattr(self.channel_layer, "receive_nowait", None)  # the Redis layer's
        for _ in range(DRAIN_AT_ONCE if take is not None else 0):
            more = take(self.channel_name)
            if more is None:
                return
            await self._handle(more)

    async def _handle(self, message: dict[str, Any]) -> None:
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def push(self, text: str) -> None:
        if self.closed:
            return
        try:
            await self.send(text_data=text)
        except GONE:
            # The browser closed the socket before this frame went out (a mass close): its
            # ``websocket.disconnect`` is queued already and leaves the groups as usual.
            self.closed = True

    async def end(self, code: int) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(*GONE):  # closed by the browser first: nothing to close
                await self.close(code)

    async def lost(self) -> None:
        await self.end(CLOSE_SIGNED_OUT)

    async def _join(self, group: str) -> None:
        await self.channel_layer.group_add(group, self.channel_name)
        self.groups.append(group)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """A failure under the socket (the channel layer's Redis away) ends this socket only,
        and cleanly: the handshake is refused (HTTP 403) or the socket closed with 1011, so the
        page reconnects with backoff; never a 500, and nothing of it stays in this process."""
        try:
            await super().__call__(scope, receive, send)
        except Exception as exc:  # noqa: BLE001 - logged by type; the socket is gone either way
            logger.warning("Socket ended by a failure (%s).", type(exc).__name__)
            with contextlib.suppress(Exception):
                await self.leave()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._leave_groups(), LEAVE_GROUPS_TIMEOUT)
            with contextlib.suppress(Exception):
                await send({"type": "websocket.close", "code": CLOSE_ERROR})

    async def _leave_groups(self) -> None:
        """What ``websocket_disconnect`` does first, for a socket that ended without it: a
        membership left behind would be sent every event of its group until it expires."""
        while self.groups:
            await self.channel_layer.group_discard(self.groups[-1], self.channel_name)
            self.groups.pop()

    async def leave(self) -> None:
        """Forget this socket in this process (called once it closed, however it closed)."""
        fanout.unregister(self)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        await self.leave()
        await super().websocket_disconnect(message)

    async def run(self, command: protocol.Command) -> str:
        raise NotImplementedError

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None):
        if self.closed:
            return
        limit = self.limit.hit()
        if limit != protocol.OK:
            if limit == protocol.VIOLATION:
                return await self.end(CLOSE_POLICY)
            return await self.push(protocol.error_frame("rate_limited"))
        command = None
        try:
            command = protocol.parse(text_data, bytes_data, self.command_types, staff=self.staff)
            answer = await self.run(command)
        except protocol.ProtocolError as error:
            if error.code in BAD_FRAMES and self.limit.bad():
                return await self.end(CLOSE_POLICY)
            answer = protocol.error_frame(error.code, error.command_id)
        except commands.SessionLost:
            return await self.end(CLOSE_SIGNED_OUT)
        except Exception as exc:  # noqa: BLE001 - a failed command never kills the socket
            logger.error("Socket command failed (%s).", type(exc).__name__)
            answer = protocol.error_frame("failed", command.id if command else None)
        await self.push(answer)

    async def patient_session_activity(self, message: dict[str, Any]) -> None:
        await self.push(activity_frame(message["event"]))

    async def patient_session_presence(self, message: dict[str, Any]) -> None:
        await self.push(presence_frame(message["event"]))

    async def patient_session_stored(self, message: dict[str, Any]) -> None:
        await self.push(stored_frame(message["event"]))


class PatientSessionConsumer(_LiveSocket):
    """``/ws/patient-session/``: the signed-in user's own session, in every tab."""

    command_types = protocol.SESSION_COMMANDS

    async def connect(self) -> None:
        # No aclose_old_connections() here: the handshake (auth.SocketAuthMiddleware) has just
        # loaded the session and user in one database_sync_to_async call, which closes them.
        self.identity = auth.identity(self.scope)
        if self.identity is None:
            return await self.close()
        ref, key = self.identity.ref, self.identity.session_key
        data = dict(await self.scope["session"].aitems())  # loaded by the handshake
        forget_loaded_session(self.scope)
        await self._join(events.session_group(ref))
        await self.accept()
        fanout.register(self)
        timers.attach(ref, key, self, SessionTarget.preloaded(key, data, self.identity.user))
        self.attached = True
        tabs = await presence.ajoin(ref, self.channel_name)
        self.joined = True
        await events.apublish_presence(ref, tabs)
        await self.push(state.session_state(ref, data, tabs))

    async def leave(self) -> None:
        await super().leave()
        if self.attached:
            self.attached = False
            timers.detach(self.identity.ref, self)
            if not timers.sockets_of(self.identity.ref):
                commands.throttle.forget(self.identity.ref)
        if self.joined:
            self.joined = False
            tabs = await presence.aleave(self.identity.ref, self.channel_name)
            await events.apublish_presence(self.identity.ref, tabs)

    async def run(self, command: protocol.Command) -> str:
        return await commands.arun_session_command(self.identity, command)

    async def on_cleanup(self, event: dict[str, Any]) -> None:
        # No timer wake-up: a cleanup only removes deadlines (the patient data's) or ends the
        # session (these sockets close), so a timer waiting for an earlier deadline looks
        # again in time; a bulk batch of a thousand sessions costs no session loads.
        text, ended = cleanup_frame(event)
        await self.push(text)
        if ended:
            await self.end(CLOSE_ENDED)

    async def patient_session_event(self, message: dict[str, Any]) -> None:
        await self.on_cleanup(message["event"])
        if message["event"].get("seen") is not None:  # its activity rode in the event
            timers.activity(self.identity.ref)

    async def patient_session_activity(self, message: dict[str, Any]) -> None:
        timers.activity(self.identity.ref)
        await super().patient_session_activity(message)

    async def patient_session_stored(self, message: dict[str, Any]) -> None:
        # New patient data brings its own deadlines (idle, absolute): judge them now.
        timers.wake(self.identity.ref)
        await super().patient_session_stored(message)


class MonitorConsumer(_LiveSocket):
    """``/ws/monitor/``: the staff dashboard, every session's events and a snapshot."""

    command_types = protocol.STAFF_COMMANDS
    staff = True

    async def connect(self) -> None:
        self.identity = auth.identity(self.scope)  # old connections closed: see above
        forget_loaded_session(self.scope)
        if self.identity is None or not await auth.acan_watch(self.identity.user):
            return await self.close()
        # Every session's events come through this process's fan-out listener, one message
        # per process (``fanout``), held back until the snapshot went out, then in order.
        await fanout.awatch(self)
        await self.accept()
        await self.push(await state.asnapshot())
        await fanout.aready(self)

    async def leave(self) -> None:
        await fanout.aunwatch(self)
        await super().leave()

    async def on_monitor_event(self, message: dict[str, Any]) -> None:
        """One message of the staff monitor's group, handed over by ``fanout``."""
        await self._handle(message)

    async def run(self, command: protocol.Command) -> str:
        return await commands.arun_staff_command(self.identity, command)

    async def patient_session_event(self, message: dict[str, Any]) -> None:
        event = message["event"]
        text, ended = cleanup_frame(event)
        await self.push(text)
        if ended and event.get("session_ref") == self.identity.ref:
            await self.end(CLOSE_ENDED)  # never more authorised than its own session
