"""The socket protocol (schema version 1, docs/events.md): frames in, frames out.

Parsing never raises anything but :class:`ProtocolError`, whose code goes back to the page as
an ``error`` frame; the consumer never crashes on what a browser sends.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

VERSION = 1
MAX_FRAME_BYTES = 4096
MAX_ID_LENGTH = 64
REF_PATTERN = re.compile(r"^[0-9a-f]{32}$")

#: Stable error codes and the text shown with them (no internals).
ERRORS = {
    "bad_json": "The frame is not a JSON object.",
    "binary_not_supported": "Binary frames are not supported: send JSON text.",
    "too_large": f"Frames may not exceed {MAX_FRAME_BYTES} bytes.",
    "unknown_type": "Unknown command type for this socket.",
    "bad_field": "A field is missing or has the wrong type.",
    "rate_limited": "Too many frames: slow down.",
    "forbidden": "You may not act on that session.",
    "no_such_session": "No session holding patient data has that reference.",
    "failed": "The command could not be completed.",
}

SESSION_COMMANDS = frozenset({"cleanup", "emergency_cleanup", "activity", "status"})
STAFF_COMMANDS = frozenset({"cleanup", "end_session", "status"})
#: Commands whose ``session`` field names the session to act on (required on the staff socket).
TARGETED = frozenset({"cleanup", "end_session"})


class ProtocolError(Exception):
    """A frame that cannot be run; ``code`` is one of :data:`ERRORS`."""

    def __init__(self, code: str, command_id: str | int | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.command_id = command_id


@dataclass(frozen=True)
class Command:
    type: str
    id: str | int | None = None
    session: str | None = None


def _command_id(body: dict[str, Any]) -> str | int | None:
    value = body.get("id")
    valid = value is None or (
        isinstance(value, (str, int))
        and not isinstance(value, bool)
        and len(str(value)) <= MAX_ID_LENGTH
    )
    if not valid:
        raise ProtocolError("bad_field")
    return value


def parse(
    text: str | None, data: bytes | None, allowed: frozenset[str], *, staff: bool = False
) -> Command:
    """The command in one frame, for a socket accepting ``allowed`` command types."""
    if text is None:
        raise ProtocolError(
            "too_large" if data and len(data) > MAX_FRAME_BYTES else "binary_not_supported"
        )
    if len(text) > MAX_FRAME_BYTES or len(text.encode()) > MAX_FRAME_BYTES:
        raise ProtocolError("too_large")
    try:
        body = json.loads(text)
    except ValueError:
        raise ProtocolError("bad_json") from None
    if not isinstance(body, dict):
        raise ProtocolError("bad_json")
    command_id = _command_id(body)
    kind = body.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("bad_field", command_id)
    if kind not in allowed:
        raise ProtocolError("unknown_type", command_id)
    session = body.get("session")
    if session is not None and (kind not in TARGETED or not isinstance(session, str)):
        raise ProtocolError("bad_field", command_id)
    if session is not None and not REF_PATTERN.match(session):
        raise ProtocolError("bad_field", command_id)
    if staff and kind in TARGETED and session is None:
        raise ProtocolError("bad_field", command_id)
    return Command(kind, command_id, session)


def frame(kind: str, **fields: Any) -> str:
    """One server -> browser frame."""
    return json.dumps({"v": VERSION, "type": kind, **fields})


def error_frame(code: str, command_id: str | int | None = None) -> str:
    return frame("error", id=command_id, error=code, message=ERRORS[code])


def reply_frame(command: Command, **fields: Any) -> str:
    return frame("reply", id=command.id, command=command.type, ok=True, **fields)


OK = "ok"
LIMITED = "limited"
VIOLATION = "violation"


class RateLimit:
    """Frames per fixed window for one socket: over ``frames`` a frame is refused; over twice
    as many, or over half as many bad frames, the socket is closed (a flood, or a client that
    does not speak the protocol)."""

    def __init__(self, frames: int, seconds: float) -> None:
        self.frames = frames
        self.seconds = seconds
        self._window = 0.0
        self._count = 0
        self._bad = 0

    def _roll(self, now: float) -> None:
        if now - self._window >= self.seconds:
            self._window, self._count, self._bad = now, 0, 0

    def hit(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        self._roll(now)
        self._count += 1
        if self._count > 2 * self.frames:
            return VIOLATION
        return LIMITED if self._count > self.frames else OK

    def bad(self) -> bool:
        """Count a bad frame; True when there were too many in this window."""
        self._bad += 1
        return self._bad > max(1, self.frames // 2)
