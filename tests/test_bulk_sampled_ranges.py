"""Key ranges of a sweep over worker processes cut at a sample of the session table
(``DatabaseBackend.boundaries`` on PostgreSQL): the ranges cover every key exactly once, and
where the sample cannot say (another database, too few sampled keys, an empty table) the
boundaries are read from the key index as before."""

from __future__ import annotations

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.db import connection
from django.utils import timezone
from django.utils.crypto import get_random_string

from patient_data.bulk import workers
from patient_data.bulk.backends import backend_for, db
from patient_data.models import CleanupEvent
from patient_data.refs import session_ref
from tests.bulk_support import (
    engine_fixture,  # noqa: F401 - the "engine" fixture
    load,
    make_session,
    run,
)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.parametrize("engine", ["db"], indirect=True),
]
postgres = pytest.mark.skipif(connection.vendor != "postgresql", reason="TABLESAMPLE: PostgreSQL")


def _rows(count: int) -> None:
    """``count`` sessions without patient data, inserted in one statement."""
    expires = timezone.now() + timezone.timedelta(hours=1)
    data = SessionStore().encode({"note": "keep-me " * 20})
    Session.objects.bulk_create(
        Session(session_key=get_random_string(32), session_data=data, expire_date=expires)
        for _ in range(count)
    )


def _in_key_order() -> list[str]:
    return list(Session.objects.order_by("session_key").values_list("session_key", flat=True))


def _swept(backend, bounds: list[str]) -> list[str]:
    """Every key the ranges between ``bounds`` hand out, range after range, page by page."""
    ranges = zip(["", *bounds], [*bounds, None], strict=True)
    return [s.key for after, upto in ranges for page in backend.pages(7, after, upto) for s in page]


def _no_exact(monkeypatch) -> None:
    def refuse(self, every):
        raise AssertionError("the boundaries were read from the key index, not sampled")

    monkeypatch.setattr(db.DatabaseBackend, "_exact", refuse)


@postgres
@pytest.mark.parametrize("every", [40, 150, 700])
def test_sampled_ranges_cover_every_key_once(engine, every, monkeypatch):
    _rows(3000)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_relation_size('django_session') / 8192")
        (blocks,) = cursor.fetchone()
    monkeypatch.setattr(db, "SAMPLE_BLOCKS", blocks // 3)  # a part of the table
    monkeypatch.setattr(db, "KEYS_PER_RANGE", 3)
    _no_exact(monkeypatch)
    backend = backend_for()
    bounds = backend.boundaries(every)
    assert len(bounds) >= 1
    assert bounds == sorted(bounds, key=_in_key_order().index)
    assert len(set(bounds)) == len(bounds)
    assert _swept(backend, bounds) == _in_key_order()


@postgres
@pytest.mark.parametrize("count", [2, 3, 4])
def test_workers_over_sampled_ranges_clean_every_session_once(engine, count, monkeypatch):
    keys = [make_session(engine) for _ in range(40)]
    _rows(60)
    since = CleanupEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
    monkeypatch.setattr(db, "KEYS_PER_RANGE", 4)  # the whole (small) table is the sample
    _no_exact(monkeypatch)
    used = []
    sweep = workers.sweep
    monkeypatch.setattr(workers, "sweep", lambda run: used.append(sweep(run)) or used[-1])
    code, out = run(
        "cleanup_patient_sessions", "--force", "--workers", str(count), "--batch-size", "3"
    )
    assert (code, used) == (0, [True]), out
    assert "Scanned 100 sessions, 40 with patient data." in out
    assert "completed: 40 sessions, 80 items removed, 0 errors" in out
    assert all("patient_summary" not in load(engine, key) for key in keys)
    refs = CleanupEvent.objects.filter(id__gt=since).values_list("session_ref", flat=True)
    assert sorted(refs) == sorted(session_ref(key) for key in keys)  # one audit row each


@postgres
def test_a_tiny_table_is_cut_from_its_whole_sample(engine, monkeypatch):
    _rows(3)
    monkeypatch.setattr(db, "KEYS_PER_RANGE", 1)
    _no_exact(monkeypatch)
    backend = backend_for()
    keys = _in_key_order()
    assert backend.boundaries(1) == keys[1:]
    assert _swept(backend, keys[1:]) == keys


@postgres
def test_too_few_sampled_keys_read_the_boundaries_from_the_key_index(engine):
    _rows(23)  # fewer than KEYS_PER_RANGE keys per range: the exact boundaries
    keys = _in_key_order()
    assert backend_for().boundaries(5) == [keys[4], keys[9], keys[14], keys[19]]


@pytest.mark.parametrize("emptied", [False, True])
def test_an_empty_table_has_no_boundaries(engine, emptied, monkeypatch):
    if emptied:  # its blocks are still there, their rows dead
        _rows(500)
        Session.objects.all().delete()
    monkeypatch.setattr(db, "KEYS_PER_RANGE", 1)
    assert backend_for().boundaries(1) == []


@pytest.mark.skipif(connection.vendor != "sqlite", reason="the fallback of another database")
def test_sqlite_reads_the_boundaries_from_the_key_index(engine, monkeypatch):
    _rows(23)

    def refuse(self, every):
        raise AssertionError("sampled on SQLite")

    monkeypatch.setattr(db.DatabaseBackend, "_sampled", refuse)
    monkeypatch.setattr(db, "KEYS_PER_RANGE", 1)
    keys = _in_key_order()
    backend = backend_for()
    bounds = backend.boundaries(5)
    assert bounds == [keys[4], keys[9], keys[14], keys[19]]
    assert _swept(backend, bounds) == keys
