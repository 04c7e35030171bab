"""``manage.py patient_session_audit``: the compliance export of the audit trail."""

from __future__ import annotations

import csv
import io
import json
from unittest import mock

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from patient_data import audit
from patient_data.cleanup import Cleanup
from patient_data.refs import session_ref

pytestmark = pytest.mark.django_db

SESSION_KEY = "abcdefghijklmnopqrstuvwxyz012345"


def _record(reason: str, source: str, items: int, when=None) -> None:
    cleanup = Cleanup(
        "clear_patient_data", reason, source, items, ("patient_summary",), session_ref(SESSION_KEY)
    )
    # created_at is auto_now_add and rows are append-only (a trigger refuses UPDATE): an older
    # row is written at its time.
    with mock.patch("django.utils.timezone.now", return_value=when or timezone.now()):
        audit.record(cleanup)


def export(*args: str) -> str:
    out = io.StringIO()
    call_command("patient_session_audit", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def trail():
    old = timezone.now() - timezone.timedelta(days=10)
    _record("bulk_cleanup", "command", 2, when=old)
    _record("bulk_cleanup", "command", 3)
    _record("startup_cleanup", "startup", 1)
    _record("manual_cleanup", "api", 4)


def test_json_has_events_and_totals_per_reason_and_source(trail):
    since = (timezone.now() - timezone.timedelta(days=1)).date().isoformat()
    result = json.loads(export("--format", "json", "--since", since))
    assert len(result["events"]) == 3
    assert result["totals"]["events"] == 3
    assert result["totals"]["items_cleared"] == 8
    assert result["totals"]["by_reason"]["bulk_cleanup"] == {"events": 1, "items_cleared": 3}
    assert result["totals"]["by_source"] == {
        "api": {"events": 1, "items_cleared": 4},
        "command": {"events": 1, "items_cleared": 3},
        "startup": {"events": 1, "items_cleared": 1},
    }
    assert {event["session_ref"] for event in result["events"]} == {session_ref(SESSION_KEY)}


def test_csv_rows_then_totals_and_no_raw_session_key(trail):
    text = export("--format", "csv")
    assert SESSION_KEY not in text
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][:4] == ["created_at", "action", "reason", "source"]
    blank = rows.index([])
    assert len(rows[1:blank]) == 4
    totals = {(row[0], row[1]): row[2:] for row in rows[blank + 2 :]}
    assert totals[("all", "")] == ["4", "10"]
    assert totals[("reason", "bulk_cleanup")] == ["2", "5"]
    assert totals[("source", "startup")] == ["1", "1"]


def test_until_date_is_inclusive(trail):
    day = (timezone.now() - timezone.timedelta(days=10)).date().isoformat()
    result = json.loads(export("--format", "json", "--until", day))
    assert [event["items_cleared"] for event in result["events"]] == [2]


def test_output_file(trail, tmp_path):
    target = tmp_path / "audit.json"
    export("--format", "json", "--output", str(target))
    assert json.loads(target.read_text())["totals"]["events"] == 4


@pytest.mark.parametrize(
    "args", [["--since", "yesterday"], ["--since", "2026-02-02", "--until", "2026-02-01"]]
)
def test_bad_dates_are_usage_errors(args):
    with pytest.raises(CommandError) as caught:
        export(*args)
    assert caught.value.returncode == 2
