"""``manage.py startup_cleanup_patient_sessions`` (original defects 9 and 11)."""

from __future__ import annotations

import pytest
from django.contrib.sessions.models import Session
from django.test import override_settings
from django.utils import timezone

from patient_data import epoch
from patient_data.models import CleanupEvent
from tests.bulk_support import (
    SERVER_ENGINES,
    engine_fixture,  # noqa: F401 - the "engine" fixture
    load,
    make_session,
    run,
    snapshot,
)

COMMAND = "startup_cleanup_patient_sessions"
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("engine", [*SERVER_ENGINES, "signed_cookies"], indirect=True)
def test_epoch_is_advanced_for_every_backend(engine):
    code, out = run(COMMAND)
    assert code == 0
    epoch.forget()
    assert epoch.current() == 1
    assert "epoch was advanced from 0 to 1" in out
    assert out.rstrip().endswith("0 errors")


@pytest.mark.parametrize("engine", SERVER_ENGINES, indirect=True)
def test_default_takes_unauthenticated_and_idle_sessions_only(engine, clinician):
    anonymous = make_session(engine)
    idle = make_session(engine, user=clinician, idle_minutes=31)
    active = make_session(engine, user=clinician)
    code, out = run(COMMAND)
    assert code == 0
    assert "patient_summary" not in load(engine, anonymous)
    assert "patient_summary" not in load(engine, idle)
    assert "patient_summary" in load(engine, active)  # void by the epoch, swept at its request
    assert (
        "Server startup patient session cleanup completed: 2 sessions, 4 items removed, 0 errors"
        in out
    )
    assert sorted(
        CleanupEvent.objects.exclude(reason="epoch_advanced").values_list("reason", "source")
    ) == [("patient_session_timeout", "startup"), ("unauthenticated_session", "startup")]


@pytest.mark.parametrize("engine", ["db", "cache"], indirect=True)
def test_all_sessions(engine, clinician):
    active = make_session(engine, user=clinician)
    code, _ = run(COMMAND, "--all-sessions", "--force")
    assert code == 0
    assert "patient_summary" not in load(engine, active)
    assert CleanupEvent.objects.filter(reason="startup_cleanup", source="startup").count() == 1


@pytest.mark.parametrize("engine", ["db"], indirect=True)
def test_all_sessions_needs_force_without_a_terminal(engine, clinician, monkeypatch):
    active = make_session(engine, user=clinician)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    code, out = run(COMMAND, "--all-sessions")
    assert code == 2
    assert "--force" in out
    assert "patient_summary" in load(engine, active)
    assert epoch.current() == 0


@pytest.mark.parametrize("engine", ["db"], indirect=True)
def test_older_than_hours_compares_last_activity_not_expiry(engine, clinician):
    """Defect 11: the old option compared the expiry date."""
    quiet = make_session(engine, user=clinician, idle_minutes=3 * 60)
    busy = make_session(engine, user=clinician)
    # busy: recent activity, expiry date soon; quiet: old activity, expiry date far away
    soon, far = (
        timezone.now() + timezone.timedelta(minutes=5),
        timezone.now() + timezone.timedelta(days=30),
    )
    Session.objects.filter(session_key=busy).update(expire_date=soon)
    Session.objects.filter(session_key=quiet).update(expire_date=far)
    code, _ = run(COMMAND, "--all-sessions", "--force", "--older-than-hours", "2")
    assert code == 0
    assert "patient_summary" not in load(engine, quiet)
    assert "patient_summary" in load(engine, busy)


@pytest.mark.parametrize("engine", ["db"], indirect=True)
def test_older_than_hours_must_be_positive(engine):
    assert run(COMMAND, "--older-than-hours", "0")[0] == 2


@pytest.mark.parametrize("engine", SERVER_ENGINES, indirect=True)
def test_dry_run_changes_nothing_not_even_the_epoch(engine, clinician):
    make_session(engine)
    make_session(engine, user=clinician, idle_minutes=31)
    before = snapshot(engine)
    code, out = run(COMMAND, "--dry-run", "--all-sessions")
    assert code == 0
    assert snapshot(engine) == before
    assert "epoch would be advanced from 0 to 1" in out
    assert "dry run: 2 sessions, 4 items would be removed" in out


def test_unsupported_backend_still_gets_the_epoch(db):
    locmem = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    with override_settings(SESSION_ENGINE="patient_data.sessions.cache", CACHES=locmem):
        code, out = run(COMMAND)
    assert code == 2
    assert "epoch was advanced from 0 to 1" in out
    assert "LocMemCache" in out
    epoch.forget()
    assert epoch.current() == 1


@pytest.mark.parametrize("engine", ["db", "file"], indirect=True)
@pytest.mark.parametrize("dry_run", [False, True])
def test_the_summary_counts_what_the_epoch_voids_beside_what_is_cleaned_now(
    engine, clinician, dry_run
):
    make_session(engine)  # anonymous: cleaned now
    make_session(engine, user=clinician, idle_minutes=31)  # idle: cleaned now
    make_session(engine, user=clinician)  # active: left to the epoch
    make_session(engine, user=clinician)
    make_session(engine, patient=False)
    code, out = run(COMMAND, *(["--dry-run"] if dry_run else []))
    assert code == 0
    assert "Scanned 5 sessions, 4 with patient data." in out
    would = " would be" if dry_run else ""
    assert (
        f"Sessions holding patient data: 2{would} cleaned now, 2 more{would} voided by the "
        "epoch (cleared at their next request)." in out
    )
