"""The small index of sessions holding patient data, and acting on one of them by its ref.

Listing sessions must not scan every stored session: the index lives in the guard's generation
rows (``PatientSessionState``, written by ``indexing`` when patient data is stored or cleared,
never on plain requests). The staff monitor lists it; the staff socket and presence act on a
session through :func:`aclear_by_ref`, which always goes through the cleanup service.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase

from patient_data import cleanup
from patient_data.models import PatientSessionState

_COLUMNS = ("ref", "session_key", "session_ref", "user_id", "items", "keys", "since")


@dataclass(frozen=True)
class IndexEntry:
    """One session holding patient data: counts, registry entries and keyed refs only."""

    session_ref: str
    user_id: str | None
    items: int
    keys: tuple[str, ...]
    since: float | None
    client_side: bool


def _indexed():
    return PatientSessionState.objects.filter(items__gt=0, session_ref__isnull=False)


def _entry(row: dict[str, Any]) -> IndexEntry:
    return IndexEntry(
        session_ref=row["session_ref"],
        user_id=row["user_id"],
        items=row["items"],
        keys=tuple(row["keys"] or ()),
        since=row["since"],
        client_side=row["session_key"] is None,
    )


async def alist() -> list[IndexEntry]:
    """Sessions holding patient data (oldest patient data first)."""
    rows = _indexed().order_by("since", "ref").values(*_COLUMNS)
    return [_entry(row) async for row in rows]


async def _arow(session_ref: str) -> dict[str, Any] | None:
    return await _indexed().filter(session_ref=session_ref).values(*_COLUMNS).afirst()


def store(session_key: str) -> SessionBase:
    """The session ``session_key`` through the configured engine (loaded lazily)."""
    return import_module(settings.SESSION_ENGINE).SessionStore(session_key)


async def aload(session_ref: str) -> SessionBase | None:
    """The indexed server-side session with this ref, loaded; None if there is none."""
    row = await _arow(session_ref)
    if row is None or row["session_key"] is None:
        return None
    session = store(row["session_key"])
    await session.aitems()
    return session


async def aclear_by_ref(
    session_ref: str, *, reason: str, source: str, actor: Any = None, end: bool = False
) -> int | None:
    """Clear (or with ``end``, end) the indexed session ``session_ref`` through the cleanup
    service; the number of items cleared, or None when no such session is indexed.

    A client-side session cannot be loaded or flushed here: its generation is bumped, which
    voids its cookie's patient data at the next request (``verify_generation_on_load``); with
    ``end`` its ref is revoked too, which logs the cookie out there.
    """
    row = await _arow(session_ref)
    if row is None:
        return None
    if row["session_key"] is None:
        return await cleanup.avoid_client_session(
            row["ref"], session_ref, tuple(row["keys"] or ()), row["items"],
            reason=reason, source=source, actor=actor, end=end,
        )  # fmt: skip
    session = store(row["session_key"])
    if end:
        return await cleanup.aend_session(session, reason=reason, source=source, actor=actor)
    items = await cleanup.aclear_patient_session_data(
        session, reason=reason, source=source, actor=actor
    )
    if not items:
        await _aforget(row)
    return items


async def _aforget(row: dict[str, Any]) -> None:
    # The blob lost its patient data outside the cleanup service (expired, deleted, flushed
    # by hand): drop the stale entry, unless a save re-indexed the row meanwhile.
    await PatientSessionState.objects.filter(
        ref=row["ref"], session_key=row["session_key"], items=row["items"]
    ).aupdate(items=0, session_key=None, session_ref=None, user_id=None, keys=None, since=None)
