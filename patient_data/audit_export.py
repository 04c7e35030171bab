"""Compliance export of the audit trail: cleanup events and totals per reason and source.

Rows hold what the audit holds: counts, registry entries and keyed hashes of session keys,
never a patient value or a raw session key. Events are streamed (constant memory).
"""

from __future__ import annotations

import csv
import json
from datetime import datetime
from typing import Any, TextIO

from django.db.models import Count, QuerySet, Sum

from patient_data.models import CleanupEvent

FIELDS = (
    "created_at",
    "action",
    "reason",
    "source",
    "actor_id",
    "session_ref",
    "items_cleared",
    "keys",
    "client_hint",
)


def events(since: datetime | None, until: datetime | None) -> QuerySet:
    """Events with ``since <= created_at < until``, oldest first."""
    query = CleanupEvent.objects.all()
    if since is not None:
        query = query.filter(created_at__gte=since)
    if until is not None:
        query = query.filter(created_at__lt=until)
    return query.order_by("created_at", "id")


def _rows(query: QuerySet):
    for row in query.values_list(*FIELDS).iterator(chunk_size=2000):
        record = dict(zip(FIELDS, row, strict=True))
        record["created_at"] = record["created_at"].isoformat()
        yield record


def totals(query: QuerySet) -> dict[str, Any]:
    """Events and items per reason and per source, and overall."""
    result: dict[str, Any] = {}
    for field in ("reason", "source"):
        grouped = (
            query.order_by()
            .values(field)
            .annotate(events=Count("id"), items_cleared=Sum("items_cleared"))
            .order_by(field)
        )
        result[f"by_{field}"] = {
            row[field]: {"events": row["events"], "items_cleared": row["items_cleared"] or 0}
            for row in grouped
        }
    overall = query.order_by().aggregate(events=Count("id"), items_cleared=Sum("items_cleared"))
    result["events"] = overall["events"]
    result["items_cleared"] = overall["items_cleared"] or 0
    return result


def write_json(out: TextIO, since: datetime | None, until: datetime | None) -> None:
    query = events(since, until)
    period = json.dumps({"since": _iso(since), "until": _iso(until)})
    out.write(period[:-1] + ', "events": [')
    for index, record in enumerate(_rows(query)):
        out.write(("," if index else "") + "\n  " + json.dumps(record))
    out.write('\n], "totals": ' + json.dumps(totals(query), sort_keys=True) + "}\n")


def write_csv(out: TextIO, since: datetime | None, until: datetime | None) -> None:
    """The events, a blank line, then a totals table (``total_by,value,events,items_cleared``)."""
    query = events(since, until)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(FIELDS)
    for record in _rows(query):
        record["keys"] = " ".join(record["keys"])
        writer.writerow([record[field] for field in FIELDS])
    summary = totals(query)
    writer.writerow([])
    writer.writerow(["total_by", "value", "events", "items_cleared"])
    writer.writerow(["all", "", summary["events"], summary["items_cleared"]])
    for field in ("reason", "source"):
        for value, counts in summary[f"by_{field}"].items():
            writer.writerow([field, value, counts["events"], counts["items_cleared"]])


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


WRITERS = {"csv": write_csv, "json": write_json}
