"""Backend specifics of the bulk cleanup: TTLs, cache copies, file times, batching, progress."""

from __future__ import annotations

import io
import os
import time

import pytest
from django.core.cache import caches
from django.db import transaction

from patient_data import guard, patient_session
from patient_data.bulk.backends import backend_for
from patient_data.bulk.progress import Progress
from patient_data.bulk.selection import Selection
from patient_data.bulk.sweep import Sweep
from patient_data.models import PatientSessionState
from tests.bulk_support import (
    engine_fixture,  # noqa: F401 - the "engine" fixture
    load,
    make_session,
    run,
    session_file,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("engine", ["cache"], indirect=True)
def test_redis_keeps_the_remaining_ttl(engine):
    session = engine.SessionStore()
    patient_session.store(session, "patient_summary", {"problems": ["SYNTH-P"]})
    session.set_expiry(600)
    session.save()
    cache = caches["default"]
    client = cache._cache.get_client(write=True)
    redis_key = cache.make_key(engine.SessionStore.cache_key_prefix + session.session_key)
    assert run("cleanup_patient_sessions", "--force")[0] == 0
    assert "patient_summary" not in load(engine, session.session_key)
    assert 590_000 < client.pttl(redis_key) <= 600_000


@pytest.mark.parametrize("engine", ["cached_db"], indirect=True)
def test_cached_db_copy_is_invalidated(engine, clinician):
    key = make_session(engine, user=clinician)
    engine.SessionStore(key).load()  # puts the copy into the cache
    cache_key = engine.SessionStore.cache_key_prefix + key
    assert "patient_summary" in caches["default"].get(cache_key)
    assert run("cleanup_patient_sessions", "--force")[0] == 0
    assert caches["default"].get(cache_key) is None
    assert "patient_summary" not in load(engine, key)


@pytest.mark.parametrize("engine", ["file"], indirect=True)
def test_file_keeps_its_modification_time_and_skips_temporary_files(engine, clinician):
    key = make_session(engine, user=clinician)
    path = session_file(key)
    old = time.time() - 3600
    os.utime(path, (old, old))
    mtime = os.stat(path).st_mtime_ns
    stray = path + "_out_abc123"
    with open(stray, "w") as handle:
        handle.write("half-written")
    code, out = run("cleanup_patient_sessions", "--force")
    assert code == 0
    assert os.stat(path).st_mtime_ns == mtime  # expiry of file sessions derives from it
    assert "patient_summary" not in load(engine, key)
    assert "Scanned 1 sessions" in out
    with open(stray) as handle:
        assert handle.read() == "half-written"


@pytest.mark.parametrize("engine", ["db", "cache"], indirect=True)
def test_pages_cover_every_session_once(engine, clinician):
    keys = {make_session(engine, user=clinician) for _ in range(7)}
    seen = [stored.key for page in backend_for().pages(3) for stored in page]
    assert set(seen) == keys
    assert len(seen) == len(keys)


def test_bump_many_creates_and_increments_generations(db):
    PatientSessionState.objects.create(ref="b", generation=4)
    with transaction.atomic():
        assert guard.bump_many(["a", "b", "a"]) == {"a": 1, "b": 5}
    assert dict(PatientSessionState.objects.values_list("ref", "generation")) == {"a": 1, "b": 5}
    assert guard.bump_many([]) == {}


@pytest.mark.parametrize("engine", ["db"], indirect=True)
def test_sweep_pages_reported_to_the_progress_callback(engine, clinician):
    for _ in range(5):
        make_session(engine, user=clinician)
    pages = []
    report = Sweep(
        backend_for(), Selection(), source="command", batch_size=2, on_page=pages.append
    ).run()
    assert pages == [2, 2, 1]
    assert (report.scanned, report.sessions, report.items) == (5, 5, 10)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_terminal_outside_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    piped = io.StringIO()
    Progress(piped, 10).advance(5)
    assert piped.getvalue() == ""
    terminal = Terminal()
    progress = Progress(terminal, 10, interval=0)
    progress.advance(5)
    progress.finish()
    assert "5/10 sessions (50%)" in terminal.getvalue()
    monkeypatch.setenv("CI", "true")
    in_ci = Terminal()
    Progress(in_ci, 10, interval=0).advance(5)
    assert in_ci.getvalue() == ""


def test_record_many_writes_the_same_rows_as_record(db):
    from patient_data import audit
    from patient_data.cleanup import Cleanup
    from patient_data.models import CleanupEvent

    cleanup = Cleanup("clear_patient_data", "bulk_cleanup", "command", 2, ("patient_cda_*",), "ab")
    other = Cleanup("end_session", "expired_session", "startup", 3, ("a", "b*"), "cd", 2**40)
    audit.record(cleanup)
    audit.record(other)
    assert audit.record_many([cleanup, other] * 3, batch_size=4) == 6
    fields = ("action", "reason", "source", "actor_id", "session_ref", "items_cleared", "keys")
    rows = list(CleanupEvent.objects.order_by("id").values_list(*fields))
    assert rows == rows[:2] * 4
    assert rows[0][-1] == ["patient_cda_*"]
    assert rows[1] == ("end_session", "expired_session", "startup", 2**40, "cd", 3, ["a", "b*"])
    assert CleanupEvent.objects.filter(created_at__isnull=True).count() == 0


@pytest.mark.parametrize("engine", ["db"], indirect=True)
def test_db_compare_and_set(engine, clinician, monkeypatch):
    """Rows still holding what was read are written or removed; a row changed or removed
    meanwhile is reported back untouched, for updates and deletes alike."""
    from patient_data.bulk.backends import db as db_backend

    monkeypatch.setattr(db_backend, "CHUNK", 2)  # several statements per call
    keys = [make_session(engine, user=clinician, note=f"n{i}") for i in range(7)]
    backend = backend_for()
    stored = backend.fetch(keys)
    changed, changed_doomed, vanished = keys[1], keys[4], keys[5]
    for key in (changed, changed_doomed):
        session = engine.SessionStore(key)
        session["note"] = "changed-meanwhile"
        session.save()
    engine.SessionStore(vanished).delete()

    updates = [(stored[key], {"note": f"cleaned-{key}"}) for key in keys[:4]]
    deletes = [stored[key] for key in keys[4:]]
    conflicts = backend.apply(updates, deletes)

    assert conflicts == {changed, changed_doomed, vanished}
    assert load(engine, changed)["note"] == "changed-meanwhile"
    assert load(engine, changed_doomed)["note"] == "changed-meanwhile"
    for key in (keys[0], keys[2], keys[3]):
        assert load(engine, key) == {"note": f"cleaned-{key}"}
    assert set(backend.fetch(keys)) == {*keys[:4], changed_doomed}


@pytest.mark.parametrize("engine", ["db"], indirect=True)
def test_db_expired_session_given_a_new_expiry_meanwhile_is_not_removed(engine, clinician):
    from django.contrib.sessions.models import Session
    from django.utils import timezone

    from tests.bulk_support import expire

    renewed, still_expired = (make_session(engine, user=clinician) for _ in range(2))
    for key in (renewed, still_expired):
        expire(engine, key)
    backend = backend_for()
    stored = backend.fetch([renewed, still_expired])
    assert stored[renewed].expired and stored[still_expired].expired
    # Same content, new expiry date: what a save within the same second can leave behind.
    later = timezone.now() + timezone.timedelta(hours=1)
    Session.objects.filter(session_key=renewed).update(expire_date=later)

    conflicts = backend.apply([], [stored[renewed], stored[still_expired]])

    assert conflicts == {renewed}
    assert set(backend.fetch([renewed, still_expired])) == {renewed}


@pytest.mark.parametrize("engine", ["db"], indirect=True)
def test_db_rows_carry_the_expiry_judged_by_the_database(engine, clinician):
    from django.contrib.sessions.models import Session
    from django.utils import timezone

    keys = [make_session(engine, user=clinician) for _ in range(4)]
    now = timezone.now()
    # Minutes around now, and the session default (weeks ahead): compared by the database,
    # in its own representation of the dates.
    offsets = {keys[0]: None, keys[1]: 1, keys[2]: -1, keys[3]: -60 * 24}
    for key, minutes in offsets.items():
        if minutes is not None:
            expiry = now + timezone.timedelta(minutes=minutes)
            Session.objects.filter(session_key=key).update(expire_date=expiry)
    expected = {key: minutes is not None and minutes < 0 for key, minutes in offsets.items()}
    paged = {stored.key: stored.expired for page in backend_for().pages(10) for stored in page}
    fetched = {key: stored.expired for key, stored in backend_for().fetch(keys).items()}
    assert paged == fetched == expected


@pytest.mark.parametrize("engine", ["db"], indirect=True)
def test_db_without_upsert_returning_is_refused_before_anything_is_read(engine, monkeypatch):
    from django.db import connection

    key = make_session(engine)
    monkeypatch.setattr(connection, "vendor", "mysql")
    code, output = run("cleanup_patient_sessions", "--force")
    assert code == 2
    assert "patient_data.E011" in output
    monkeypatch.undo()
    assert "patient_summary" in load(engine, key)
