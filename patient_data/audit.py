"""The audit trail: one append-only row per cleanup, written by the cleanup service."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from django.db import connections, router, transaction
from django.utils import timezone

from patient_data.batches import batched
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

    Values are prepared by the model's own fields, but once per distinct value (one timestamp
    per call, one JSON document per distinct key list) rather than once per row through model
    instances; they go out with ``COPY`` on PostgreSQL and as one multi-row INSERT per batch
    elsewhere: one call into the driver per batch, not one per row (``bulk_create`` compiled a
    statement costlier than the inserts).
    """
    using = router.db_for_write(CleanupEvent)
    connection = connections[using]
    meta = CleanupEvent._meta
    names = [f.name for f in meta.concrete_fields if not f.primary_key]
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    columns = ", ".join(quote(meta.get_field(name).column) for name in names)
    placeholders = "(" + ", ".join(["%s"] * len(names)) + ")"
    limit = connection.features.max_query_params
    if limit:
        batch_size = max(1, min(batch_size, limit // len(names)))
    copy = f"COPY {table} ({columns}) FROM STDIN"
    created_field = meta.get_field("created_at")
    created = created_field.get_db_prep_save(timezone.now(), connection)
    keys_field = meta.get_field("keys")
    prepared_keys: dict[tuple[str, ...], object] = {}

    def values(cleanup: Cleanup) -> list:
        keys = prepared_keys.get(cleanup.keys)
        if keys is None:
            keys = prepared_keys[cleanup.keys] = keys_field.get_db_prep_save(
                list(cleanup.keys), connection
            )
        row = {
            "created_at": created,
            "action": str(cleanup.action),
            "reason": cleanup.reason,
            "source": cleanup.source,
            "actor_id": cleanup.actor_id,
            "session_ref": cleanup.session_ref,
            "items_cleared": cleanup.items_cleared,
            "keys": keys,
        }
        return [row[name] for name in names]

    written = 0
    with transaction.atomic(using=using), connection.cursor() as cursor:
        for batch in batched(cleanups, batch_size):
            params = [values(cleanup) for cleanup in batch]
            if connection.vendor == "postgresql":
                with cursor.copy(copy) as stream:
                    for row in params:
                        stream.write_row(row)
            else:
                rows = ", ".join([placeholders] * len(params))
                cursor.execute(
                    f"INSERT INTO {table} ({columns}) VALUES {rows}",  # noqa: S608 - model names
                    [value for row in params for value in row],
                )
            written += len(params)
    return written
