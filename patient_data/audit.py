"""The audit trail: one append-only row per cleanup, written by the cleanup service."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

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
    """Insert many rows in batches (bulk commands); returns how many were written."""
    rows = [_row(cleanup) for cleanup in cleanups]
    CleanupEvent.objects.bulk_create(rows, batch_size=batch_size)
    return len(rows)
