"""The audit trail is a hash chain: a row removed, changed or added by hand past the
triggers is found by ``patient_session_audit --verify`` (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import importlib
import io
import multiprocessing
import os
import threading
from types import SimpleNamespace

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.apps import apps as django_apps
from django.core.management import CommandError, call_command
from django.db import connection, connections
from django.utils import timezone

from patient_data import append_only, audit, audit_chain, cleanup, patient_session
from patient_data.bulk import workers
from patient_data.cleanup import Cleanup
from patient_data.models import AuditChainHead, CleanupEvent
from patient_data.sessions.db import SessionStore

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


def _head() -> str:
    return AuditChainHead.objects.get().row_hash


def test_the_head_follows_every_writer(trail):
    assert _head() == CleanupEvent.objects.get(id=trail[-1]).row_hash
    audit.record_many([_cleanup(6), _cleanup(7)])
    assert _head() == CleanupEvent.objects.order_by("id").last().row_hash
    assert audit.record_many([]) == 0
    assert _head() == CleanupEvent.objects.order_by("id").last().row_hash


def test_a_missing_head_is_taken_from_the_last_row(trail):
    AuditChainHead.objects.all().delete()  # a flushed database keeps no head row
    row = audit.record(_cleanup(6))
    assert row.prev_hash == CleanupEvent.objects.get(id=trail[-1]).row_hash
    AuditChainHead.objects.all().delete()
    audit.record_many([_cleanup(7)])
    assert "7 rows chained" in _verify()


def test_the_migration_sets_the_head_of_an_existing_trail(trail):
    AuditChainHead.objects.update(row_hash="", prev_hash="")
    migration = importlib.import_module("patient_data.migrations.0007_audit_chain_head")
    migration.set_head(django_apps, SimpleNamespace(connection=connection))
    assert _head() == CleanupEvent.objects.get(id=trail[-1]).row_hash
    audit.record(_cleanup(6))
    assert "6 rows chained" in _verify()


def test_rows_cut_from_the_end_are_found_once_the_next_row_is_written(trail):
    _as_table_owner(f"DELETE FROM {TABLE} WHERE id = %s", [trail[-1]])  # noqa: S608
    assert "4 rows chained" in _verify()  # alone, a shorter chain: compare the head
    row = audit.record(_cleanup(6))
    message = _broken()
    assert f"row id {row.id}" in message and "missing or moved" in message


@pytest.mark.skipif(connection.vendor != "postgresql", reason="writers in parallel: PostgreSQL")
@pytest.mark.django_db(transaction=True)
def test_writers_at_the_same_time_form_one_chain_in_id_order(clinician):
    """Cleanups (sync and async), bulk batches and forked processes write at once."""
    sessions = []
    for index in range(24):
        session = SessionStore()
        patient_session.store(session, "patient_summary", {"problems": [f"SYN-{index}"]})
        session.save()
        sessions.append(session.session_key)
    context = multiprocessing.get_context("fork")
    start = context.Event()  # threads and forked processes alike wait for it

    def cleanups(keys: list[str]) -> None:
        start.wait(30)
        for key in keys:
            assert cleanup.clear_patient_session_data(SessionStore(key)) == 1

    def async_cleanups(keys: list[str]) -> None:
        async def run() -> None:
            await asyncio.gather(
                *(cleanup.aclear_patient_session_data(SessionStore(key)) for key in keys)
            )

        start.wait(30)
        async_to_sync(run)()

    def batches() -> None:
        start.wait(30)
        for size in (1, 5, 30, 2):
            audit.record_many([_cleanup(size)] * size)

    def forked() -> None:
        start.wait(30)
        for _ in range(3):
            audit.record_many([_cleanup(1)] * 7)
            audit.record(_cleanup(2))

    workers._release_connections()  # the children open their own, as the bulk workers'
    children = [context.Process(target=_child, args=(forked,)) for _ in range(2)]
    threads = [
        threading.Thread(target=_closing, args=(cleanups, sessions[:8])),
        threading.Thread(target=_closing, args=(cleanups, sessions[8:16])),
        threading.Thread(target=_closing, args=(async_cleanups, sessions[16:])),
        threading.Thread(target=_closing, args=(batches,)),
    ]
    for worker in [*children, *threads]:
        worker.start()
    start.set()
    for worker in [*children, *threads]:
        worker.join(60)
    assert [child.exitcode for child in children] == [0, 0]
    assert not any(thread.is_alive() for thread in threads)
    written = 24 + (1 + 5 + 30 + 2) + 2 * 3 * (7 + 1)
    assert CleanupEvent.objects.count() == written
    assert f"Audit chain intact: {written} rows chained" in _verify()
    assert _head() == CleanupEvent.objects.order_by("id").last().row_hash


def _closing(work, *args) -> None:
    try:
        work(*args)
    finally:
        connections.close_all()


def _child(work) -> None:
    try:
        _closing(work)
    except BaseException:  # noqa: BLE001 - any failure is the exit code the test reads
        os._exit(1)
    os._exit(0)
