"""Writing the index of sessions holding patient data (read and acted on in ``index``).

The guard calls :func:`update` on the generation row it holds locked, for every save of a blob
with patient data: the index follows the stored blob exactly, and a save that changes nothing
the index shows (a plain activity stamp) writes nothing more. A cleanup leaves no patient data:
its upsert of the row (``guard.cleaning``) takes the session out of the index itself.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import SESSION_KEY

from patient_data import meta as session_meta
from patient_data.models import PatientSessionState
from patient_data.refs import session_ref
from patient_data.registry import get_registry

#: The index columns of ``PatientSessionState``.
FIELDS = ("session_key", "session_ref", "user_id", "items", "keys", "since")


def client_ref(meta_ref: str) -> str:
    """The keyed reference of a client-side session: its key is the whole signed cookie,
    which changes on every write, so the random bookkeeping ref names it instead."""
    return session_ref(f"client:{meta_ref}")


def columns(data: dict[str, Any], session_key: str | None, client_side: bool) -> dict[str, Any]:
    """The index columns for a stored blob (``items`` 0 and the rest None: not indexed)."""
    keys = get_registry().patient_keys(list(data))
    if not keys:
        return dict.fromkeys(FIELDS) | {"items": 0}
    info = session_meta.read(data)
    user_id = data.get(SESSION_KEY)
    return {
        "session_key": None if client_side else session_key,
        "session_ref": client_ref(info["ref"]) if client_side else session_ref(session_key),
        "user_id": None if user_id is None else str(user_id),
        "items": len(keys),
        "keys": get_registry().entries(keys),
        "since": info.get("since"),
    }


def update(
    state: PatientSessionState,
    data: dict[str, Any],
    session_key: str | None,
    *,
    client_side: bool = False,
) -> list[str]:
    """Set the index columns of ``state`` from the blob about to be stored; returns the
    changed field names (the caller saves them, if any, inside its lock)."""
    if session_key is None and not client_side and get_registry().patient_keys(list(data)):
        return []  # not stored yet: the nested save that creates the key indexes it
    changed = []
    for field, value in columns(data, session_key, client_side).items():
        if getattr(state, field) != value:
            setattr(state, field, value)
            changed.append(field)
    return changed
