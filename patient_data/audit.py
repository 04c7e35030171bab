"""The audit trail: one append-only row per cleanup, written by the cleanup service."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from django.db import connections, router, transaction

from patient_data.models import CleanupEvent

if TYPE_CHECKING:
    from patient_data.cleanup import Cleanup


def _row(cleanup: Cleanup) -> CleanupEvent:
    return CleanupEvent(
        action=cleanup.action,
        reason=cleanup.reason,
        source=cleanup.source,
        actor_id=cleanup.actor_id,
        session_ref=cleanup.session_ref,
        items_cleared=cleanup.items_cleared,
        keys=list(cleanup.keys),
    )


def record(cleanup: Cleanup) -> CleanupEvent:
    row = _row(cleanup)
    row.save()
    return row


async def arecord(cleanup: Cleanup) -> CleanupEvent:
    row = _row(cleanup)
    await row.asave()
    return row


def record_many(cleanups: Iterable[Cleanup], batch_size: int = 500) -> int:
    """Insert many rows in batches (bulk commands); returns how many were written.

    Fields are prepared by Django as ``bulk_create`` would, then sent with ``COPY`` on
    PostgreSQL and one prepared INSERT with ``executemany`` elsewhere: compiling
    ``bulk_create``'s multi-row statement cost more than the inserts in a bulk cleanup.
    """
    using = router.db_for_write(CleanupEvent)
    connection = connections[using]
    fields = [field for field in CleanupEvent._meta.concrete_fields if not field.primary_key]
    quote = connection.ops.quote_name
    table = quote(CleanupEvent._meta.db_table)
    columns = ", ".join(quote(field.column) for field in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    sql = f"INSERT INTO {table} ({columns}) VALUES ({placeholders})"  # noqa: S608 - model names
    copy = f"COPY {table} ({columns}) FROM STDIN"
    rows = [_row(cleanup) for cleanup in cleanups]
    with transaction.atomic(using=using), connection.cursor() as cursor:
        for start in range(0, len(rows), batch_size):
            params = [
                [field.get_db_prep_save(field.pre_save(row, True), connection) for field in fields]
                for row in rows[start : start + batch_size]
            ]
            if connection.vendor == "postgresql":
                with cursor.copy(copy) as stream:
                    for values in params:
                        stream.write_row(values)
            else:
                cursor.executemany(sql, params)
    return len(rows)
