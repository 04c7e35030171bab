"""Open sockets per session.

A minimal in-process stand-in behind the contract's three functions, so the consumers can be
built and tested; the presence work replaces it with the cross-process implementation (Redis
or the database, heartbeats, the reaper that clears ``browser_closed`` sessions).
"""

from __future__ import annotations

_open: dict[str, set[str]] = {}


async def ajoin(session_ref: str, socket_id: str) -> int:
    """Open sockets of ``session_ref`` after ``socket_id`` joined."""
    sockets = _open.setdefault(session_ref, set())
    sockets.add(socket_id)
    return len(sockets)


async def aleave(session_ref: str, socket_id: str) -> int:
    """Open sockets of ``session_ref`` left after ``socket_id`` closed."""
    sockets = _open.get(session_ref, set())
    sockets.discard(socket_id)
    if not sockets:
        _open.pop(session_ref, None)
    return len(sockets)


async def acount(session_ref: str) -> int:
    return len(_open.get(session_ref, ()))
