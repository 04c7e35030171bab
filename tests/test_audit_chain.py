"""The audit trail is a hash chain: a row removed, changed or added by hand past the
triggers is found by ``patient_session_audit --verify`` (SQLite and PostgreSQL)."""

from __future__ import annotations

import io

import pytest
from asgiref.sync import sync_to_async
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from patient_data import append_only, audit, audit_chain
from patient_data.cleanup import Cleanup
from patient_data.models import CleanupEvent

TABLE = CleanupEvent._meta.db_table


def _cleanup(items: int, hint: str | None = None) -> Cleanup:
    return Cleanup(
        "clear_patient_data",
        "manual_cleanup",
        "api",
        items,
        ("patient_summary",),
        "r" * 32,
        client_hint=hint,
    )


def _verify() -> str:
    out = io.StringIO()
    call_command("patient_session_audit", "--verify", stdout=out)
    return out.getvalue()


def _broken() -> str:
    with pytest.raises(CommandError) as refused:
        _verify()
    assert refused.value.returncode == 1
    return str(refused.value)


def _as_table_owner(statement: str, params: list | None = None) -> None:
    """What someone past the application does: drop the triggers' guard and write."""
    with append_only.unlocked(), connection.cursor() as cursor:
        cursor.execute(_triggers_off())
        cursor.execute(statement, params or [])
        cursor.execute(_triggers_on())


def _triggers_off() -> str:
    if connection.vendor == "postgresql":
        return f"ALTER TABLE {TABLE} DISABLE TRIGGER USER"
    return "DROP TRIGGER patient_data_audit_no_update"


def _triggers_on() -> str:
    if connection.vendor == "postgresql":
        return f"ALTER TABLE {TABLE} ENABLE TRIGGER USER"
    return (
        f"CREATE TRIGGER patient_data_audit_no_update BEFORE UPDATE ON {TABLE} "
        "BEGIN SELECT RAISE(ABORT, 'patient_data_cleanupevent is append-only'); END"
    )


@pytest.fixture
def trail(db):
    audit.record(_cleanup(1))
    audit.record_many([_cleanup(2), _cleanup(3, "shortcut"), _cleanup(4)])
    audit.record(_cleanup(5, "button"))
    return list(CleanupEvent.objects.order_by("id").values_list("id", flat=True))


def test_rows_written_one_by_one_and_in_bulk_form_one_intact_chain(trail):
    rows = list(audit_chain.stored_rows())
    assert [row["prev_hash"] for row in rows[1:]] == [row["row_hash"] for row in rows[:-1]]
    assert rows[0]["prev_hash"] == ""
    out = _verify()
    assert "Audit chain intact: 5 rows chained, 0 from before the chain" in out
    assert rows[-1]["row_hash"] in out


@pytest.mark.django_db(transaction=True)
async def test_the_async_writer_extends_the_same_chain():
    await audit.arecord(_cleanup(1))
    await audit.arecord(_cleanup(2))
    rows = await sync_to_async(lambda: list(audit_chain.stored_rows()))()
    assert rows[1]["prev_hash"] == rows[0]["row_hash"] != ""
    assert "2 rows chained" in await sync_to_async(_verify)()


def test_a_deleted_row_in_the_middle_is_found(trail):
    _as_table_owner(f"DELETE FROM {TABLE} WHERE id = %s", [trail[2]])  # noqa: S608
    message = _broken()
    assert f"row id {trail[3]}" in message and "missing or moved" in message


def test_a_changed_row_is_found(trail):
    _as_table_owner(f"UPDATE {TABLE} SET items_cleared = 0 WHERE id = %s", [trail[1]])  # noqa: S608
    message = _broken()
    assert f"row id {trail[1]}" in message and "content was changed" in message


def test_a_row_slipped_in_by_hand_is_found(trail):
    _as_table_owner(
        f"INSERT INTO {TABLE} (created_at, action, reason, source, session_ref, items_cleared,"  # noqa: S608
        " keys, prev_hash, row_hash) SELECT created_at, action, reason, source, session_ref, 0,"
        f" keys, '', '' FROM {TABLE} WHERE id = %s",
        [trail[0]],
    )
    assert "added outside the application" in _broken()


def test_rows_from_before_the_chain_are_counted_not_failed(db):
    _as_table_owner(
        f"INSERT INTO {TABLE} (created_at, action, reason, source, session_ref, items_cleared,"  # noqa: S608
        " keys, prev_hash, row_hash) VALUES (%s, 'end_session', 'logout', 'logout', '-', 0,"
        " '[]', '', '')",
        [connection.ops.adapt_datetimefield_value(timezone.now())],
    )
    audit.record(_cleanup(1))
    assert "1 rows chained, 1 from before the chain" in _verify()
