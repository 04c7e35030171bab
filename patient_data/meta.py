"""The bookkeeping stored next to the patient data in the session (never patient data itself).

``_patient_meta`` is a small dict:

- ``ref``: random reference of this session's patient data (keys the cleanup generation),
- ``since``: when the session first got patient data (absolute lifetime),
- ``seen``: last user activity (idle timeouts), written at most once per interval,
- ``gen``: cleanup generation the data belongs to (no-resurrection guard),
- ``epoch``: server-wide patient-data epoch the data was stored under,
- ``login``: when the user signed in (the session's absolute lifetime).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from patient_data.registry import META_KEY


def read(data: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the session's bookkeeping (empty dict when there is none or it is malformed)."""
    meta = data.get(META_KEY)
    return dict(meta) if isinstance(meta, dict) else {}


def stamped_for_store(meta: dict[str, Any], now: float, epoch: int) -> dict[str, Any]:
    """Bookkeeping after a patient value is stored at ``now`` under ``epoch``.

    ``seen`` is only set when missing: activity is the middleware's (throttled) business.
    """
    updated = dict(meta)
    updated.setdefault("ref", secrets.token_hex(16))
    updated.setdefault("gen", 0)
    updated.setdefault("seen", now)
    if updated.get("since") is None:
        updated["since"] = now
        updated["epoch"] = epoch
    return updated


def after_cleanup(meta: dict[str, Any], generation: int | None) -> dict[str, Any]:
    """Bookkeeping once the patient data is gone (activity is kept: it is the user's)."""
    updated = {k: v for k, v in meta.items() if k not in {"since", "epoch"}}
    if generation is not None:
        updated["gen"] = generation
    return updated


def at_login(meta: dict[str, Any], now: float) -> dict[str, Any]:
    """Bookkeeping of a session whose user just signed in: a ref (so the session can be
    revoked when it ends) and the login time (absolute lifetime)."""
    return {**with_ref(meta), "login": now}


def with_ref(meta: dict[str, Any]) -> dict[str, Any]:
    if meta.get("ref"):
        return meta
    return {**meta, "ref": secrets.token_hex(16), "gen": meta.get("gen", 0)}
