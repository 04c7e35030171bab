"""The audit trail as a hash chain: each row carries the hash of the row before it.

A row deleted, changed or slipped in by hand (past the database triggers, e.g. by someone with
the table owner's rights) breaks the chain at that point, and ``patient_session_audit
--verify`` says where. Removing rows from the end leaves a shorter valid chain: compare the
head hash and count that ``--verify`` prints with ones recorded earlier elsewhere.

Rows are chained in ``id`` order; writers take a lock first (an advisory lock on PostgreSQL,
the IMMEDIATE write transaction on SQLite), so no two rows claim the same predecessor.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from django.db import connections

from patient_data.models import CleanupEvent

#: Any fixed number: the PostgreSQL advisory lock every audit writer takes.
LOCK_KEY = 0x70617469656E74  # "patient"
FIELD_SEPARATOR = "\x1f"
KEY_SEPARATOR = "\x1e"
#: Columns a row's hash covers, in this order (after the previous row's hash).
FIELDS = (
    "created_at",
    "action",
    "reason",
    "source",
    "client_hint",
    "actor_id",
    "session_ref",
    "items_cleared",
    "keys",
)


def timestamp(value: datetime) -> str:
    """How a row's time enters its hash (bulk writers format their one time once)."""
    return value.astimezone(timezone.utc).isoformat()


def row_hash(prev_hash: str, values: dict[str, Any]) -> str:
    """SHA-256 of the previous row's hash and this row's audited columns (:data:`FIELDS`).

    Written out field by field: the bulk writers hash every row they insert.
    """
    created = values["created_at"]
    actor = values["actor_id"]
    text = FIELD_SEPARATOR.join(
        (
            prev_hash,
            created if isinstance(created, str) else timestamp(created),
            values["action"],
            values["reason"],
            values["source"],
            values["client_hint"] or "",
            "" if actor is None else str(actor),
            values["session_ref"],
            str(values["items_cleared"]),
            KEY_SEPARATOR.join(values["keys"]),
        )
    )
    return hashlib.sha256(text.encode()).hexdigest()


def lock_and_read_head(using: str) -> str:
    """Inside the writer's transaction: wait for the chain, return the last row's hash."""
    connection = connections[using]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK_KEY])
    last = (
        CleanupEvent.objects.using(using).order_by("-id").values_list("row_hash", flat=True).first()
    )
    return last or ""


@dataclass
class Verification:
    """What ``--verify`` found: rows checked, rows from before the chain, the first break."""

    checked: int = 0
    unchained: int = 0
    head: str = ""
    broken_at: int | None = None
    problem: str = ""

    @property
    def intact(self) -> bool:
        return self.broken_at is None


def verify(rows: Iterable[dict[str, Any]]) -> Verification:
    """Walk ``rows`` (dicts with ``id``, ``prev_hash``, ``row_hash`` and :data:`FIELDS`, in
    ``id`` order) and stop at the first row that does not follow from the one before."""
    result = Verification()
    for row in rows:
        if not row["row_hash"] and not result.head:
            result.unchained += 1  # written before the chain existed
            continue
        result.checked += 1
        if not row["row_hash"]:
            result.broken_at, result.problem = row["id"], "it was added outside the application"
        elif row["prev_hash"] != result.head:
            result.broken_at, result.problem = row["id"], "a row before it is missing or moved"
        elif row_hash(row["prev_hash"], row) != row["row_hash"]:
            result.broken_at, result.problem = row["id"], "its content was changed"
        if not result.intact:
            return result
        result.head = row["row_hash"]
    return result


def stored_rows(using: str = "default") -> Iterator[dict[str, Any]]:
    """Every audit row in chain order, streamed."""
    names = ("id", "prev_hash", "row_hash", *FIELDS)
    query = CleanupEvent.objects.using(using).order_by("id").values_list(*names)
    for values in query.iterator(chunk_size=5000):
        yield dict(zip(names, values, strict=True))
