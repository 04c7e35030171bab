"""The bulk sweeps and the index of sessions holding patient data (``patient_data.indexing``).

A routine sweep (``cleanup_patient_sessions``) reads only the sessions the index lists, so its
cost follows the patient data, not the session count. It may do so once a full sweep
(``startup_cleanup_patient_sessions``, which reads every stored session) has repaired the index:
sessions stored before the index existed, or by a writer that bypassed the guarded engines, are
only found by reading everything. Until then a routine sweep reads everything too.

The repair: a full sweep indexes every session it finds holding patient data (page by page,
one upsert each), then drops the entries it did not confirm (written before the run started
and not seen): constant memory, one statement at the end.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from patient_data import indexing
from patient_data import meta as session_meta
from patient_data.bulk.backends import Backend, Stored
from patient_data.models import PatientSessionState

#: The row saying a full sweep has repaired the index (not a ref: refs are hex; never indexed).
REPAIRED_MARK = "index:repaired-by-full-sweep"

#: The index columns of a session not indexed.
UNINDEXED = dict.fromkeys(indexing.FIELDS) | {"items": 0}


def trusted() -> bool:
    """Whether a full sweep has repaired the index, so a routine sweep may read it alone."""
    return PatientSessionState.objects.filter(ref=REPAIRED_MARK).exists()


def pages(backend: Backend, size: int) -> Iterator[list[Stored]]:
    """The stored sessions the index lists, ``size`` at a time (by ref: the primary key).

    An entry whose session is gone is dropped on the way.
    """
    entries = PatientSessionState.objects.filter(items__gt=0, session_key__isnull=False)
    last = ""
    while True:
        chunk = list(
            entries.filter(ref__gt=last).order_by("ref").values_list("ref", "session_key")[:size]
        )
        if not chunk:
            return
        found = backend.fetch([session_key for _, session_key in chunk])
        gone = [ref for ref, session_key in chunk if session_key not in found]
        if gone:
            PatientSessionState.objects.filter(ref__in=gone).update(**UNINDEXED)
        yield [found[session_key] for _, session_key in chunk if session_key in found]
        last = chunk[-1][0]


def confirm(found: Iterable[tuple[str, dict[str, Any]]]) -> None:
    """Index the sessions (key, data) of one page of a full sweep that hold patient data."""
    rows = []
    for session_key, data in found:
        ref = session_meta.read(data).get("ref")
        if ref:
            rows.append(PatientSessionState(ref=ref, **indexing.columns(data, session_key, False)))
    if rows:
        PatientSessionState.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["ref"],
            update_fields=[*indexing.FIELDS, "updated_at"],
        )


def finish_repair(started: datetime) -> int:
    """Drop the entries a full sweep started at ``started`` did not confirm (every save with
    patient data and every cleanup since then moved ``updated_at``); the index is now
    trusted. Returns how many were dropped."""
    stale = PatientSessionState.objects.filter(
        items__gt=0, session_key__isnull=False, updated_at__lt=started
    ).exclude(ref=REPAIRED_MARK)
    dropped = stale.update(**UNINDEXED)
    PatientSessionState.objects.get_or_create(ref=REPAIRED_MARK)
    return dropped
