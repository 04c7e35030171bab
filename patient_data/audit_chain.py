"""The audit trail as a hash chain: each row carries the hash of the row before it.

A row deleted, changed or slipped in by hand (past the database triggers, e.g. by someone with
the table owner's rights) breaks the chain at that point, and ``patient_session_audit
--verify`` says where. Removing rows from the end leaves a shorter valid chain: compare the
head hash and count that ``--verify`` prints with ones recorded earlier elsewhere.

Rows are chained in ``id`` order. The head (the last chained row's hash) is kept in a one-row
table, ``AuditChainHead``: every writer locks that row, chains its rows from it and moves it,
in the transaction that inserts them, so no two rows claim the same predecessor and a row
inserted later has a larger ``id`` (its ``id`` is drawn after the lock). The lock is the row
lock on PostgreSQL (the IMMEDIATE write transaction on SQLite), taken by the writer's last
statements, right before its commit: the section every writer of the deployment waits for
is short. A single row is one statement on PostgreSQL (:data:`APPEND_ONE`): lock and move
the head, hash in the database, insert. A missing head row (a flushed database) is created
from the last row of the trail.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from django.db import connections

from patient_data.models import AuditChainHead, CleanupEvent

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


def row_text(values: dict[str, Any]) -> str:
    """What a row's hash covers after the previous row's hash (:data:`FIELDS`, each after a
    separator): :func:`row_hash` and PostgreSQL's one-statement append hash the same text.

    Written out field by field: the bulk writers hash every row they insert.
    """
    created = values["created_at"]
    actor = values["actor_id"]
    return FIELD_SEPARATOR.join(
        (
            "",
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


def row_hash(prev_hash: str, values: dict[str, Any]) -> str:
    """SHA-256 of the previous row's hash and this row's audited columns (:data:`FIELDS`)."""
    return hashlib.sha256((prev_hash + row_text(values)).encode()).hexdigest()


_HEAD = AuditChainHead._meta.db_table
_LAST_ROW = f"SELECT row_hash FROM {CleanupEvent._meta.db_table} ORDER BY id DESC LIMIT 1"  # noqa: S608 - model table
#: Lock the head row (created from the last row when missing) and read it, in one statement.
#: An upsert that waits for the row lock updates the newest committed head, never the one
#: its snapshot saw (PostgreSQL's READ COMMITTED); ``WHERE true``: SQLite's upsert syntax.
LOCK_HEAD = (
    f"INSERT INTO {_HEAD} AS head (id, row_hash, prev_hash) "
    f"SELECT 1, coalesce(({_LAST_ROW}), ''), '' WHERE true "
    "ON CONFLICT (id) DO UPDATE SET row_hash = head.row_hash RETURNING row_hash"
)
_MOVE_HEAD = f"UPDATE {_HEAD} SET prev_hash = %s, row_hash = %s WHERE id = 1"  # noqa: S608 - model table
_SHA256 = "encode(sha256(convert_to({} || %s, 'UTF8')), 'hex')"
#: PostgreSQL: a ``head(prev_hash, row_hash)`` to insert one row from, its two parameters
#: the row's :func:`row_text`: the head row locked (created when missing, as
#: :data:`LOCK_HEAD`), moved on by the row's hash computed in the database, old and new
#: hash returned. The statement that inserts the row is the one that locks the chain.
APPEND_ONE = (
    f"WITH head AS (INSERT INTO {_HEAD} AS head (id, row_hash, prev_hash) "  # noqa: S608 - model table
    f"SELECT 1, {_SHA256.format('last.hash')}, last.hash "
    f"FROM (SELECT coalesce(({_LAST_ROW}), '') AS hash) AS last "
    f"ON CONFLICT (id) DO UPDATE SET prev_hash = head.row_hash, "
    f"row_hash = {_SHA256.format('head.row_hash')} RETURNING prev_hash, row_hash) "
)


def lock_and_read_head(using: str) -> str:
    """Inside the writer's transaction: wait for the chain, return its head's hash.

    The head stays locked until the transaction ends; :func:`move_head` sets it before.
    """
    with connections[using].cursor() as cursor:
        cursor.execute(LOCK_HEAD)
        return cursor.fetchone()[0]


def move_head(using: str, prev_hash: str, head: str) -> None:
    """Inside the transaction that locked the head: the last row written is ``head``."""
    with connections[using].cursor() as cursor:
        cursor.execute(_MOVE_HEAD, [prev_hash, head])


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
