"""The bulk sweeps and the index of sessions holding patient data: routine sweeps read only the
indexed sessions once a full sweep has repaired the index; full sweeps read all and repair it."""

from __future__ import annotations

import pytest
from django.contrib.sessions.models import Session

from patient_data.bulk import indexed
from patient_data.bulk.sweep import Sweep
from patient_data.models import PatientSessionState
from tests.bulk_support import (
    engine_fixture,  # noqa: F401 - the "engine" fixture
    load,
    login,
    make_session,
    run,
    snapshot,
    tamper,
)

ROUTINE = "cleanup_patient_sessions"
FULL = "startup_cleanup_patient_sessions"
pytestmark = pytest.mark.django_db(transaction=True)
engines = pytest.mark.parametrize("engine", ["db", "file"], indirect=True)


def _indexed_keys() -> set[str]:
    rows = PatientSessionState.objects.filter(items__gt=0, session_key__isnull=False)
    return set(rows.values_list("session_key", flat=True))


def _forget_the_index() -> None:
    """As if the sessions had been stored before the index existed."""
    PatientSessionState.objects.update(**indexed.UNINDEXED)


@engines
def test_a_routine_sweep_reads_everything_until_a_full_sweep_repaired_the_index(engine, clinician):
    for _ in range(3):
        make_session(engine, patient=False)
    make_session(engine, user=clinician)
    assert not indexed.trusted()
    code, out = run(ROUTINE, "--force")
    assert code == 0
    assert "Scanned 4 sessions, 1 with patient data." in out
    assert not indexed.trusted()  # only a full sweep may vouch for the index


@engines
def test_after_a_full_sweep_a_routine_sweep_reads_only_the_indexed_sessions(engine, clinician):
    for _ in range(3):
        make_session(engine, patient=False)
    kept = [make_session(engine, user=clinician) for _ in range(2)]
    code, out = run(FULL)
    assert code == 0
    assert "Scanned 5 sessions, 2 with patient data." in out
    assert indexed.trusted()
    later = make_session(engine, user=clinician)
    code, out = run(ROUTINE, "--force")
    assert code == 0
    assert "Scanned 3 sessions, 3 with patient data." in out
    assert "3 sessions, 6 items removed, 0 errors" in out
    for key in [*kept, later]:
        assert "patient_summary" not in load(engine, key)
    assert _indexed_keys() == set()


@engines
def test_a_full_sweep_indexes_the_sessions_the_index_missed(engine, clinician):
    key = make_session(engine, user=clinician)
    _forget_the_index()
    code, _ = run(FULL)
    assert code == 0
    assert _indexed_keys() == {key}
    assert "patient_summary" in load(engine, key)  # kept: a fresh, signed-in session


@engines
def test_a_full_sweep_drops_entries_the_stored_sessions_no_longer_back(engine, clinician):
    key = make_session(engine, user=clinician)
    store = engine.SessionStore(key)
    data = store.load()
    store._session_cache = {k: v for k, v in data.items() if not k.startswith("patient_")}
    store.save_unguarded()  # the patient data left by a path that bypassed the index
    assert _indexed_keys() == {key}
    code, _ = run(FULL)
    assert code == 0
    assert _indexed_keys() == set()


@pytest.mark.parametrize("engine", ["db"], indirect=True)
def test_an_entry_whose_session_is_gone_is_dropped_by_a_routine_sweep(engine, clinician):
    gone, kept = make_session(engine, user=clinician), make_session(engine, user=clinician)
    assert run(FULL)[0] == 0
    Session.objects.filter(session_key=gone).delete()
    code, out = run(ROUTINE, "--unauthenticated-only", "--force")
    assert code == 0
    assert "Scanned 1 sessions, 1 with patient data." in out
    assert _indexed_keys() == {kept}


@engines
def test_a_dry_full_sweep_neither_repairs_nor_vouches_for_the_index(engine, clinician):
    make_session(engine, user=clinician)
    _forget_the_index()
    before = snapshot(engine)
    code, _ = run(FULL, "--dry-run")
    assert code == 0
    assert snapshot(engine) == before
    assert not indexed.trusted()


def _rewrite(engine, key: str, data: dict, user=None) -> None:
    """Store ``data`` as session ``key`` the way a writer bypassing the index would."""
    store = engine.SessionStore(key)
    store._session_cache = dict(data)
    if user is not None:
        login(store, user)
    store.save_unguarded()


@engines
def test_a_full_sweep_indexes_sessions_changed_under_it_as_re_read(engine, clinician, monkeypatch):
    """Sessions to clean that such a writer changed between the sweep's read and its write:
    after the compare-and-set conflict the index follows what was re-read, not the page."""
    emptied, deleted, signed_in, filled = (make_session(engine) for _ in range(4))
    data = {key: load(engine, key) for key in (emptied, signed_in, filled)}
    tamper(engine, filled)  # undecodable, holding nothing: to be removed (--force)
    _forget_the_index()
    original, changed = Sweep._write, []

    def change_them_first(self, plans):
        if not changed:
            changed.append(True)
            _rewrite(engine, emptied, {"note": data[emptied]["note"]})
            engine.SessionStore(deleted).delete()
            _rewrite(  # one patient key less, signed in: kept
                engine,
                signed_in,
                {k: v for k, v in data[signed_in].items() if k != "patient_cda_SYNTH42"},
                clinician,
            )
            _rewrite(engine, filled, data[filled], clinician)
        return original(self, plans)

    monkeypatch.setattr(Sweep, "_write", change_them_first)
    code, out = run(FULL, "--force")
    assert code == 0, out
    assert changed
    rows = PatientSessionState.objects.filter(items__gt=0, session_key__isnull=False)
    indexed_now = {row.session_key: row for row in rows}
    assert set(indexed_now) == {signed_in, filled}
    assert indexed_now[signed_in].items == 1
    assert indexed_now[signed_in].user_id == str(clinician.pk)
    assert indexed_now[filled].items == 2
    assert "patient_summary" in load(engine, signed_in)  # kept: signed in now
