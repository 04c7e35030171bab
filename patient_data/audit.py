"""The audit trail: one append-only row per cleanup, written by the cleanup service."""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cache
from typing import TYPE_CHECKING

from asgiref.sync import sync_to_async
from django.db import connections, router, transaction
from django.utils import timezone

from patient_data import audit_chain
from patient_data.batches import batched
from patient_data.models import CleanupEvent
from patient_data.server_binding import array_cursor

if TYPE_CHECKING:
    from patient_data.cleanup import Cleanup


#: PostgreSQL array types of the audit columns bound by ``record_many`` (others: text).
_ARRAY_TYPES = {"actor_id": "bigint", "items_cleared": "integer"}


def _row(cleanup: Cleanup) -> CleanupEvent:
    return CleanupEvent(
        created_at=timezone.now(),
        action=cleanup.action,
        reason=cleanup.reason,
        source=cleanup.source,
        actor_id=cleanup.actor_id,
        session_ref=cleanup.session_ref,
        items_cleared=cleanup.items_cleared,
        keys=list(cleanup.keys),
        client_hint=cleanup.client_hint,
    )


def _chained(row: CleanupEvent, prev_hash: str) -> CleanupEvent:
    row.prev_hash = prev_hash
    row.row_hash = audit_chain.row_hash(
        prev_hash, {name: getattr(row, name) for name in audit_chain.FIELDS}
    )
    return row


def record(cleanup: Cleanup) -> CleanupEvent:
    """Write the audit row of ``cleanup``, chained at the head.

    Inside a transaction (the cleanup's own, see ``patient_data.cleanup``) the row is part of
    it: written or rolled back with the session it records. Call it last before the commit:
    the chain is locked from here to the end of the transaction.
    """
    using = router.db_for_write(CleanupEvent)
    row = _row(cleanup)
    # No savepoint: an error here rolls back the caller's transaction with it.
    with transaction.atomic(using=using, savepoint=False):
        if connections[using].vendor == "postgresql":
            _append(row, using)
        else:
            prev_hash = audit_chain.lock_and_read_head(using)
            row = _chained(row, prev_hash)
            row.save(using=using)
            audit_chain.move_head(using, prev_hash, row.row_hash)
    return row


def _append(row: CleanupEvent, using: str) -> None:
    """PostgreSQL: lock the chain, hash, insert and move the head in one statement."""
    values = {name: getattr(row, name) for name in audit_chain.FIELDS}
    text = audit_chain.row_text(values)
    values["keys"] = json.dumps(values["keys"])
    with connections[using].cursor() as cursor:
        cursor.execute(_append_sql(), [text, text, *values.values()])
        row.id, row.prev_hash, row.row_hash = cursor.fetchone()
    row._state.adding = False
    row._state.db = using


@cache
def _append_sql() -> str:
    meta = CleanupEvent._meta
    columns = ", ".join(meta.get_field(name).column for name in audit_chain.FIELDS)
    values = ", ".join("%s::jsonb" if name == "keys" else "%s" for name in audit_chain.FIELDS)
    return (
        f"{audit_chain.APPEND_ONE}INSERT INTO {meta.db_table} "  # noqa: S608 - model names
        f"({columns}, prev_hash, row_hash) SELECT {values}, head.prev_hash, head.row_hash "
        "FROM head RETURNING id, prev_hash, row_hash"
    )


async def arecord(cleanup: Cleanup) -> CleanupEvent:
    # The chain needs a transaction (lock, read the head, insert): Django's async ORM has
    # none, and asave() would hop to the sync thread all the same.
    return await sync_to_async(record)(cleanup)


def record_many(cleanups: Iterable[Cleanup], batch_size: int = 500) -> int:
    """Insert many rows in batches (bulk commands); returns how many were written.

    One statement per batch, one timestamp per call. On PostgreSQL the batch travels as one
    array per column bound by the server in binary (``unnest``, see
    ``patient_data.server_binding``): a short constant statement, no per-row work in the
    driver (``COPY`` spent twice the client CPU) and no JSON for the server to parse.
    Elsewhere one multi-row INSERT with values prepared by the model's own fields, once per
    distinct value (``bulk_create`` compiled a statement costlier than the inserts).
    """
    using = router.db_for_write(CleanupEvent)
    connection = connections[using]
    meta = CleanupEvent._meta
    names = [f.name for f in meta.concrete_fields if not f.primary_key]
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    column = {name: meta.get_field(name).column for name in names}
    now = timezone.now()
    created = meta.get_field("created_at").get_db_prep_save(now, connection)
    keys_field = meta.get_field("keys")
    prepared_keys: dict[tuple[str, ...], object] = {}
    postgresql = connection.vendor == "postgresql"
    head = ""
    hashed_time = audit_chain.timestamp(now)

    def values(cleanup: Cleanup) -> dict:
        nonlocal head
        prev_hash = head
        head = audit_chain.row_hash(
            prev_hash,
            {
                "created_at": hashed_time,
                "action": str(cleanup.action),
                "reason": cleanup.reason,
                "source": cleanup.source,
                "client_hint": cleanup.client_hint,
                "actor_id": cleanup.actor_id,
                "session_ref": cleanup.session_ref,
                "items_cleared": cleanup.items_cleared,
                "keys": cleanup.keys,
            },
        )
        if (keys := prepared_keys.get(cleanup.keys)) is None:
            keys = prepared_keys[cleanup.keys] = (
                json.dumps(list(cleanup.keys))  # read as jsonb by the statement
                if postgresql
                else keys_field.get_db_prep_save(list(cleanup.keys), connection)
            )
        return {
            column["action"]: str(cleanup.action),
            column["reason"]: cleanup.reason,
            column["source"]: cleanup.source,
            column["actor_id"]: cleanup.actor_id,
            column["session_ref"]: cleanup.session_ref,
            column["items_cleared"]: cleanup.items_cleared,
            column["keys"]: keys,
            column["client_hint"]: cleanup.client_hint,
            column["prev_hash"]: prev_hash,
            column["row_hash"]: head,
        }

    rest = [column[name] for name in names if name != "created_at"]
    selected = ", ".join(quote(name) for name in rest)
    insert = f"INSERT INTO {table} ({quote(column['created_at'])}, {selected})"
    if postgresql:
        arrays = ", ".join(f"{{array}}::{_ARRAY_TYPES.get(name, 'text')}[]" for name in rest)
        # The keys arrive as JSON text, read as jsonb; in the batch's order: ids follow the chain.
        picked = ", ".join(
            f"r.{quote(name)}::jsonb" if name == column["keys"] else f"r.{quote(name)}"
            for name in rest
        )
        rows_from = f"unnest({arrays}) WITH ORDINALITY AS r({selected}, ordinality)"
        sql = f"{insert} SELECT %s, {picked} FROM {rows_from} ORDER BY r.ordinality"  # noqa: S608 - model names
    else:
        placeholders = "(" + ", ".join(["%s"] * len(names)) + ")"
        limit = connection.features.max_query_params
        if limit:
            batch_size = max(1, min(batch_size, limit // len(names)))

    written = 0
    # No savepoint (a round trip) inside the caller's transaction: see guard.bump_many.
    with transaction.atomic(using=using, savepoint=False), array_cursor(connection) as bound:
        cursor, array = bound
        if postgresql:
            sql = sql.format(array=array)
        head = first = audit_chain.lock_and_read_head(using)
        prev_hash = ""
        for batch in batched(cleanups, batch_size):
            rows = [values(cleanup) for cleanup in batch]
            if postgresql:
                arrays = [[row[name] for row in rows] for name in rest]
                cursor.execute(sql, [created, *arrays])
            else:
                params = []
                for row in rows:
                    params.append(created)
                    params.extend(row[name] for name in rest)
                cursor.execute(f"{insert} VALUES " + ", ".join([placeholders] * len(rows)), params)
            written += len(rows)
            prev_hash = rows[-1][column["prev_hash"]]
        if head != first:
            audit_chain.move_head(using, prev_hash, head)
    return written
