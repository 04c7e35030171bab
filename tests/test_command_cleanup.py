"""``manage.py cleanup_patient_sessions`` on every server-side backend (original defects 9, 10)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.base import SessionBase
from django.test import override_settings

from patient_data.models import CleanupEvent
from patient_data.refs import session_ref
from patient_data.registry import META_KEY
from tests.bulk_support import (
    SERVER_ENGINES,
    engine_fixture,  # noqa: F401 - the "engine" fixture
    expire,
    load,
    make_session,
    run,
    snapshot,
    tamper,
)

COMMAND = "cleanup_patient_sessions"
every_backend = pytest.mark.parametrize("engine", SERVER_ENGINES, indirect=True)
pytestmark = pytest.mark.django_db(transaction=True)


@every_backend
def test_patient_data_goes_everything_else_stays(engine, clinician):
    anonymous = make_session(engine)
    signed_in = make_session(engine, user=clinician)
    code, out = run(COMMAND, "--force")
    assert code == 0
    for key in (anonymous, signed_in):
        data = load(engine, key)
        assert "patient_summary" not in data
        assert "patient_cda_SYNTH42" not in data
        assert data["note"] == "keep-me"
        assert "since" not in data[META_KEY]
    assert load(engine, signed_in)["_auth_user_id"] == str(clinician.pk)
    assert "Patient session cleanup completed: 2 sessions, 4 items removed, 0 errors" in out


@every_backend
def test_sessions_without_patient_data_are_untouched_byte_for_byte(engine, clinician):
    make_session(engine, patient=False)
    make_session(engine, patient=False, user=clinician)
    before = snapshot(engine)
    code, _ = run(COMMAND, "--force")
    assert code == 0
    assert snapshot(engine) == before


@every_backend
def test_dry_run_changes_nothing(engine, clinician):
    make_session(engine)
    make_session(engine, user=clinician, idle_minutes=45)
    make_session(engine, patient=False)
    before = snapshot(engine)
    code, out = run(COMMAND, "--dry-run", "--force", "-v", "2")
    assert code == 0
    assert snapshot(engine) == before
    assert "dry run: 2 sessions, 4 items would be removed, 0 errors (nothing was changed)" in out
    assert out.count("patient_cda_*") == 2  # registry entries, never the full key


@pytest.mark.parametrize("engine", ["db", "file"], indirect=True)
def test_expired_sessions_are_removed_not_written_back(engine, clinician):
    """Defect 10: the old command re-saved expired sessions, patient data included."""
    expired = make_session(engine, user=clinician)
    live = make_session(engine, user=clinician)
    expire(engine, expired)
    code, out = run(COMMAND, "--force")
    assert code == 0
    assert not engine.SessionStore().exists(expired)
    assert load(engine, live)["note"] == "keep-me"
    assert "1 expired sessions removed." in out
    reasons = sorted(CleanupEvent.objects.values_list("reason", "action"))
    assert reasons == [("bulk_cleanup", "clear_patient_data"), ("expired_session", "end_session")]


@every_backend
def test_unauthenticated_only(engine, clinician):
    anonymous = make_session(engine)
    signed_in = make_session(engine, user=clinician)
    orphan_user = get_user_model().objects.create_user("gone", password="synthetic-pass-1")
    orphaned = make_session(engine, user=orphan_user)
    orphan_user.delete()
    code, _ = run(COMMAND, "--force", "--unauthenticated-only")
    assert code == 0
    assert "patient_summary" not in load(engine, anonymous)
    assert "patient_summary" not in load(engine, orphaned)
    assert "patient_summary" in load(engine, signed_in)
    assert set(CleanupEvent.objects.values_list("reason", flat=True)) == {"unauthenticated_session"}


@pytest.mark.parametrize("engine", ["db"], indirect=True)
def test_inactive_user_or_changed_password_counts_as_unauthenticated(engine, clinician):
    inactive = get_user_model().objects.create_user("inactive", password="synthetic-pass-1")
    inactive_key = make_session(engine, user=inactive)
    inactive.is_active = False
    inactive.save()
    stale_hash = make_session(engine, user=clinician)
    clinician.set_password("another-synthetic-pass")
    clinician.save()
    code, _ = run(COMMAND, "--force", "--unauthenticated-only")
    assert code == 0
    assert "patient_summary" not in load(engine, inactive_key)
    assert "patient_summary" not in load(engine, stale_hash)


@every_backend
def test_expired_only_takes_idle_and_too_old_sessions(engine, clinician):
    fresh = make_session(engine, user=clinician)
    idle = make_session(engine, user=clinician, idle_minutes=31)
    code, _ = run(COMMAND, "--force", "--expired-only")
    assert code == 0
    assert "patient_summary" in load(engine, fresh)
    assert "patient_summary" not in load(engine, idle)
    event = CleanupEvent.objects.get()
    assert (event.reason, event.source) == ("patient_session_timeout", "command")
    assert event.session_ref == session_ref(idle)
    assert event.keys == ["patient_cda_*", "patient_summary"]
    assert event.items_cleared == 2


@pytest.mark.parametrize("engine", ["db"], indirect=True)
def test_expired_only_and_unauthenticated_only_together_need_both(engine, clinician):
    idle_signed_in = make_session(engine, user=clinician, idle_minutes=31)
    fresh_anonymous = make_session(engine)
    idle_anonymous = make_session(engine, idle_minutes=31)
    code, _ = run(COMMAND, "--force", "--expired-only", "--unauthenticated-only")
    assert code == 0
    assert "patient_summary" in load(engine, idle_signed_in)
    assert "patient_summary" in load(engine, fresh_anonymous)
    assert "patient_summary" not in load(engine, idle_anonymous)


@pytest.mark.parametrize("engine", ["db"], indirect=True)
def test_refuses_without_terminal_or_force(engine, monkeypatch):
    key = make_session(engine)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    code, out = run(COMMAND)
    assert code == 2
    assert "no terminal to ask on" in out
    assert "--force" in out
    assert "patient_summary" in load(engine, key)


@pytest.mark.parametrize("engine", ["db"], indirect=True)
@pytest.mark.parametrize(("answer", "code", "cleaned"), [("y", 0, True), ("n", 2, False)])
def test_asks_on_a_terminal(engine, monkeypatch, answer, code, cleaned):
    key = make_session(engine)
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    questions = []
    monkeypatch.setattr("builtins.input", lambda q: questions.append(q) or answer)
    assert run(COMMAND)[0] == code
    assert questions == ["Remove patient data from the selected sessions? [y/N] "]
    assert ("patient_summary" not in load(engine, key)) is cleaned


@every_backend
def test_cleanups_are_audited_per_session_without_keys_or_values(engine, clinician):
    keys = [make_session(engine, user=clinician) for _ in range(3)]
    code, out = run(COMMAND, "--force", "--batch-size", "2", "-v", "2")
    assert code == 0
    events = CleanupEvent.objects.order_by("id")
    assert sorted(e.session_ref for e in events) == sorted(session_ref(k) for k in keys)
    assert {(e.source, e.reason, e.items_cleared) for e in events} == {
        ("command", "bulk_cleanup", 2)
    }
    for key in keys:
        assert key not in out
    assert "SYNTH" not in out


@pytest.mark.parametrize("engine", ["db", "file", "cache"], indirect=True)
def test_undecodable_sessions_are_counted_and_removed_only_with_force(engine, monkeypatch):
    good = make_session(engine)
    bad = make_session(engine, patient=False)
    tamper(engine, bad)
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda q: "y")
    code, out = run(COMMAND)
    assert code == 0
    assert "1 undecodable sessions (kept; --force removes them" in out
    assert "patient_summary" not in load(engine, good)
    code, out = run(COMMAND, "--force")
    assert code == 0
    assert "1 undecodable sessions (1 removed)." in out
    assert not engine.SessionStore().exists(bad)
    assert CleanupEvent.objects.filter(reason="undecodable_session").count() == 1


@pytest.mark.parametrize("engine", ["db"], indirect=True)
def test_one_bad_session_does_not_abort_the_run(engine, monkeypatch):
    keys = [make_session(engine) for _ in range(4)]
    from patient_data.bulk.backends.db import DatabaseBackend

    original = DatabaseBackend.apply

    def failing(self, updates, deletes):
        if any(stored.key == keys[1] for stored, _ in updates):
            raise RuntimeError("disk on fire")
        return original(self, updates, deletes)

    monkeypatch.setattr(DatabaseBackend, "apply", failing)
    code, out = run(COMMAND, "--force")
    assert code == 1
    assert "3 sessions, 6 items removed, 1 errors" in out
    assert "patient_summary" in load(engine, keys[1])
    assert all("patient_summary" not in load(engine, k) for k in keys if k != keys[1])


def test_signed_cookies_advance_the_epoch_and_say_so(db):
    from patient_data import epoch

    with override_settings(SESSION_ENGINE="patient_data.sessions.signed_cookies"):
        code, out = run(COMMAND, "--force", "--unauthenticated-only")
        assert code == 0
        assert epoch.current() == 1
        assert "epoch was advanced from 0 to 1" in out
        assert "cannot be enumerated" in out
        code, out = run(COMMAND, "--dry-run")
        assert epoch.current() == 1
        assert "epoch would be advanced from 1 to 2" in out
    assert CleanupEvent.objects.get().reason == "epoch_advanced"


def test_local_memory_cache_sessions_are_refused_with_the_way_out(db):
    locmem = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    with override_settings(SESSION_ENGINE="patient_data.sessions.cache", CACHES=locmem):
        code, out = run(COMMAND, "--force")
    assert code == 2
    assert "LocMemCache" in out
    assert "RedisCache" in out


class SessionStore(SessionBase):
    """A home-made engine the bulk cleanup knows nothing about."""


def test_unknown_engine_is_refused(db):
    with override_settings(SESSION_ENGINE=__name__):
        code, out = run(COMMAND, "--force")
    assert code == 2
    assert f"{__name__!r}" in out
    assert "Way out" in out
