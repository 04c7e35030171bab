"""daphne with the project's access log: ``python -m ncp_asgi.server`` takes daphne's options.

daphne's own access log writes the full request URI, query string included, so a crafted or
bookmarked URL carrying a name or an identifier would land in the log. This one writes one
JSON object per line (a SIEM reads it without a parser of its own) with the path only: a
query string is never written, only the fact that there was one.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from daphne.access import AccessLogGenerator
from daphne.cli import CommandLineInterface
from daphne.server import Server

#: daphne's actions and the event name each is logged under.
EVENTS = {
    ("http", "complete"): "http",
    ("websocket", "connecting"): "ws_connecting",
    ("websocket", "rejected"): "ws_rejected",
    ("websocket", "connected"): "ws_connected",
    ("websocket", "disconnected"): "ws_disconnected",
}


def entry(protocol: str, action: str, details: dict[str, Any]) -> dict[str, Any] | None:
    """The log record of one daphne action (None for actions that are not logged)."""
    event = EVENTS.get((protocol, action))
    if event is None:
        return None
    path, _, query = str(details.get("path") or "").partition("?")
    record: dict[str, Any] = {
        "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "event": event,
        "client": details.get("client"),
        "path": path,
        "query_redacted": bool(query),
    }
    if protocol == "http":
        record.update(
            method=details.get("method"),
            status=details.get("status"),
            bytes=details.get("size"),
            duration_ms=round(float(details.get("time_taken") or 0) * 1000, 1),
        )
    return record


class AccessLog(AccessLogGenerator):
    """daphne's action logger, writing :func:`entry` records as JSON lines."""

    def __call__(self, protocol: str, action: str, details: dict[str, Any]) -> None:
        record = entry(protocol, action, details)
        if record is not None:
            self.stream.write(json.dumps(record, separators=(",", ":")) + "\n")
            self.stream.flush()


class AccessLoggedServer(Server):
    """daphne's server, its access log (if any) replaced by :class:`AccessLog`."""

    def __init__(self, *args: Any, action_logger: Any = None, **kwargs: Any) -> None:
        if isinstance(action_logger, AccessLogGenerator):
            action_logger = AccessLog(action_logger.stream)
        super().__init__(*args, action_logger=action_logger, **kwargs)


class ServerCommand(CommandLineInterface):
    server_class = AccessLoggedServer


if __name__ == "__main__":
    ServerCommand.entrypoint()
