"""The audit table is append-only in the database: raw SQL, the base manager and ``flush``
meet a trigger (SQLite and PostgreSQL). Only an unlocked transaction may delete; none may
update."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction

from patient_data import append_only, audit
from patient_data.cleanup import Cleanup
from patient_data.models import CleanupEvent

TABLE = CleanupEvent._meta.db_table


def _write_rows(count: int = 2) -> None:
    audit.record_many(
        Cleanup("clear_patient_data", "manual_cleanup", "api", 1, ("patient_summary",), "r" * 32)
        for _ in range(count)
    )


def _refused(statement: str) -> None:
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(statement)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "statement",
    [
        f"UPDATE {TABLE} SET reason = 'rewritten'",  # noqa: S608 - fixed test statements
        f"UPDATE {TABLE} SET items_cleared = 0 WHERE id = (SELECT max(id) FROM {TABLE})",  # noqa: S608
        f"DELETE FROM {TABLE}",  # noqa: S608
        f"DELETE FROM {TABLE} WHERE id = (SELECT min(id) FROM {TABLE})",  # noqa: S608
    ],
)
def test_raw_sql_cannot_change_or_delete_audit_rows(statement):
    _write_rows()
    _refused(statement)
    assert list(CleanupEvent.objects.values_list("reason", "items_cleared")) == [
        ("manual_cleanup", 1),
        ("manual_cleanup", 1),
    ]


@pytest.mark.django_db
def test_the_base_manager_cannot_delete_or_update_either():
    _write_rows()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        CleanupEvent._base_manager.all().delete()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        CleanupEvent._base_manager.all().update(reason="rewritten")
    assert CleanupEvent.objects.count() == 2


@pytest.mark.django_db
def test_truncate_is_refused_on_postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("TRUNCATE is PostgreSQL's")
    _write_rows()
    _refused(f"TRUNCATE {TABLE}")
    assert CleanupEvent.objects.count() == 2


@pytest.mark.django_db
def test_manage_py_flush_cannot_empty_the_audit_trail(monkeypatch):
    _write_rows()
    # The suite's own teardown unlocks flush (tests/conftest.py); an operator's does not.
    monkeypatch.setattr(append_only, "unlocked", _no_unlock)
    with pytest.raises(CommandError, match="couldn't be flushed") as refused:
        call_command("flush", interactive=False, verbosity=0)
    assert "append-only" in str(refused.value.__cause__)
    assert CleanupEvent.objects.count() == 2


@pytest.mark.django_db
def test_an_unlocked_transaction_may_delete_but_never_update():
    _write_rows()
    with append_only.unlocked():
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            CleanupEvent._base_manager.all().update(reason="rewritten")
        CleanupEvent._base_manager.all().delete()
    assert CleanupEvent.objects.count() == 0
    _write_rows(1)
    _refused(f"DELETE FROM {TABLE}")  # noqa: S608 - the unlock ended with its transaction


@pytest.mark.django_db
def test_the_triggers_survive_every_migration():
    with connection.cursor() as cursor:
        assert _triggers(cursor) >= _expected_triggers()


def _triggers(cursor) -> set[str]:
    if connection.vendor == "postgresql":
        cursor.execute(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal",
            [TABLE],
        )
    else:
        cursor.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = %s", [TABLE]
        )
    return {row[0] for row in cursor.fetchall()}


def _expected_triggers() -> set[str]:
    return set(append_only.TRIGGERS[connection.vendor])


def _no_unlock(using: str = "default"):
    return transaction.atomic(using=using)
