"""Key-range partitions over worker processes (``patient_data.bulk.workers``): a sweep over
several processes ends exactly as one over one process."""

from __future__ import annotations

import os
from collections import Counter

import pytest
from django.contrib.sessions.models import Session
from django.core.cache import caches
from django.db import transaction
from django.utils import timezone

from patient_data import audit_chain
from patient_data.bulk import workers
from patient_data.bulk.backends import backend_for
from patient_data.bulk.sweep import Sweep
from patient_data.models import CleanupEvent, PatientSessionState
from patient_data.signals import patient_session_cleared
from tests.bulk_support import (
    engine_fixture,  # noqa: F401 - the "engine" fixture
    expire,
    load,
    make_session,
    run,
)

pytestmark = pytest.mark.django_db(transaction=True)
AUDITED = ("action", "reason", "source", "session_ref", "items_cleared", "keys", "client_hint")


def _store(engine, clinician) -> list[str]:
    """A mix of every kind of session the sweep decides on, over many key ranges."""
    keys = []
    for index in range(36):
        kind = index % 6
        if kind == 0:
            keys.append(make_session(engine))  # unauthenticated, patient data
        elif kind == 1:
            keys.append(make_session(engine, user=clinician))  # active user
        elif kind == 2:
            keys.append(make_session(engine, user=clinician, idle_minutes=31))
        elif kind == 3:
            keys.append(make_session(engine, patient=False, user=clinician))
        elif kind == 4:
            keys.append(make_session(engine))
            expire(engine, keys[-1])
        else:
            keys.append(make_session(engine, patient=False))
            Session.objects.filter(session_key=keys[-1]).update(session_data="tampered:blob")
            caches["default"].clear()
    return keys


def _rows() -> tuple[list, list]:
    sessions = list(Session.objects.order_by("session_key").values_list())
    states = list(PatientSessionState.objects.order_by("ref").values_list())
    return sessions, states


def _restore(saved: tuple[list, list]) -> None:
    sessions, states = saved
    Session.objects.all().delete()
    PatientSessionState.objects.all().delete()
    Session.objects.bulk_create(Session(*row) for row in sessions)
    PatientSessionState.objects.bulk_create(PatientSessionState(*row) for row in states)


def _outcome(engine, keys: list[str], since: int) -> dict:
    """What a run left: sessions as Django loads them, index, audit rows (not their ids,
    times or hashes, which differ between any two runs)."""
    audit = CleanupEvent.objects.filter(id__gt=since).values_list(*AUDITED)
    return {
        "sessions": {key: load(engine, key) for key in keys},
        "index": sorted(
            PatientSessionState.objects.values_list(
                "ref", "session_key", "items", "keys", "generation", "user_id"
            )
        ),
        "audit": Counter((*row[:5], tuple(row[5]), row[6]) for row in audit),
    }


def _run_with(monkeypatch, *args: str) -> tuple[int, str, list[bool]]:
    used = []
    sweep = workers.sweep

    def spy(run):
        used.append(sweep(run))
        return used[-1]

    monkeypatch.setattr(workers, "sweep", spy)
    code, out = run(*args)
    return code, out, used


def _last_event() -> int:
    return CleanupEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0


@pytest.mark.parametrize(
    ("engine", "command", "options"),
    [
        ("db", "cleanup_patient_sessions", ["--force"]),
        ("cached_db", "cleanup_patient_sessions", ["--force"]),
        ("db", "startup_cleanup_patient_sessions", ["--all-sessions", "--force"]),
        ("db", "startup_cleanup_patient_sessions", []),
        ("db", "cleanup_patient_sessions", ["--dry-run"]),
    ],
    indirect=["engine"],
)
def test_workers_end_exactly_as_one_process(engine, command, options, clinician, monkeypatch):
    keys = _store(engine, clinician)
    saved = _rows()
    since = _last_event()
    code, alone, used = _run_with(
        monkeypatch, command, *options, "--workers", "1", "--batch-size", "2"
    )
    assert (code, used) == (0, [False])
    one = _outcome(engine, keys, since)
    _restore(saved)
    since = _last_event()
    code, shared, used = _run_with(
        monkeypatch, command, *options, "--workers", "3", "--batch-size", "2"
    )
    assert (code, used) == (0, [True])
    assert _outcome(engine, keys, since) == one
    # The summary, line for line (the epoch moved on by the first run).
    assert shared.replace("from 1 to 2", "from 0 to 1") == alone
    assert audit_chain.verify(audit_chain.stored_rows()).intact


@pytest.mark.parametrize("engine", ["db"], indirect=True)
def test_the_command_process_gets_every_signal_and_verbose_line(engine, clinician, monkeypatch):
    keys = [make_session(engine) for _ in range(30)]
    received = []

    def listener(sender, **cleanup):
        received.append(cleanup["session_ref"])

    patient_session_cleared.connect(listener)
    try:
        code, out, used = _run_with(
            monkeypatch,
            "cleanup_patient_sessions",
            "--force",
            "--workers",
            "2",
            "--batch-size",
            "1",
            "--verbosity",
            "2",
        )
    finally:
        patient_session_cleared.disconnect(listener)
    assert (code, used) == (0, [True])
    assert len(received) == len(set(received)) == len(keys)
    assert sum(1 for line in out.splitlines() if line.startswith("  session ")) == len(keys)
    assert "completed: 30 sessions, 60 items removed, 0 errors" in out


@pytest.mark.parametrize("engine", ["db"], indirect=True)
def test_key_ranges_cover_every_row_once(engine):
    keys = sorted(make_session(engine, patient=False) for _ in range(23))
    backend = backend_for()
    bounds = backend.boundaries(5)
    assert bounds == [keys[4], keys[9], keys[14], keys[19]]
    ranges = zip(["", *bounds], [*bounds, None], strict=True)
    seen = [s.key for after, upto in ranges for page in backend.pages(2, after, upto) for s in page]
    assert seen == keys


@pytest.mark.parametrize("engine", ["db"], indirect=True)
def test_a_worker_that_dies_is_an_error(engine, monkeypatch):
    for _ in range(30):
        make_session(engine)
    pid = os.getpid()
    original = Sweep.sweep_pages

    def die_in_a_child(self, pages):
        if os.getpid() != pid:
            os._exit(3)
        original(self, pages)

    monkeypatch.setattr(Sweep, "sweep_pages", die_in_a_child)
    code, out, used = _run_with(
        monkeypatch, "cleanup_patient_sessions", "--force", "--workers", "2", "--batch-size", "1"
    )
    assert used == [True]
    assert code == 1
    assert "Finished with 1 errors" in out


@pytest.mark.parametrize("engine", ["db"], indirect=True)
def test_one_process_inside_a_transaction(engine, monkeypatch):
    # Workers would not see the caller's uncommitted rows.
    for _ in range(30):
        make_session(engine)
    with transaction.atomic():
        code, out, used = _run_with(
            monkeypatch,
            "cleanup_patient_sessions",
            "--force",
            "--workers",
            "4",
            "--batch-size",
            "1",
        )
    assert (code, used) == (0, [False])
    assert "completed: 30 sessions" in out


def test_the_default_is_one_worker_per_cpu_at_most_four(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert workers.default_workers() == 2
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert workers.default_workers() == 4


@pytest.mark.parametrize("value", ["0", "33"])
def test_workers_out_of_bounds_are_refused(value):
    code, out = run("cleanup_patient_sessions", "--force", "--workers", value)
    assert code == 2
    assert "--workers must be between 1 and 32." in out


@pytest.mark.parametrize("engine", ["db"], indirect=True)
def test_sessions_written_during_the_sweep_past_the_last_range_are_swept(engine, monkeypatch):
    for _ in range(20):
        make_session(engine)
    backend_class = type(backend_for())
    boundaries = backend_class.boundaries

    def and_one_more(self, every):
        found = boundaries(self, every)
        Session.objects.create(
            session_key="z" * 32,
            session_data=engine.SessionStore().encode({"patient_summary": {"problems": ["SYNTH"]}}),
            expire_date=timezone.now() + timezone.timedelta(hours=1),
        )
        return found

    monkeypatch.setattr(backend_class, "boundaries", and_one_more)
    code, out, used = _run_with(
        monkeypatch, "cleanup_patient_sessions", "--force", "--workers", "2", "--batch-size", "1"
    )
    assert (code, used) == (0, [True])
    assert "Scanned 21 sessions, 21 with patient data." in out


@pytest.mark.parametrize("engine", ["db"], indirect=True)
def test_a_failing_command_process_still_hears_its_workers_out(engine, monkeypatch):
    keys = [make_session(engine) for _ in range(30)]
    pid = os.getpid()
    original = Sweep.sweep_pages

    def fail_here(self, pages):
        if os.getpid() == pid:
            raise RuntimeError("synthetic failure")
        original(self, pages)

    monkeypatch.setattr(Sweep, "sweep_pages", fail_here)
    with pytest.raises(RuntimeError, match="synthetic failure"):
        _run_with(
            monkeypatch,
            "cleanup_patient_sessions",
            "--force",
            "--workers",
            "2",
            "--batch-size",
            "1",
        )
    # The worker swept every range but the one this process failed on.
    cleaned = sum("patient_summary" not in load(engine, key) for key in keys)
    assert len(keys) - 10 <= cleaned < len(keys)
