"""Which sessions a bulk run takes, and why (pure rules plus the user check)."""

from __future__ import annotations

import time

import pytest
from django.contrib.auth import get_user_model

from patient_data.bulk.selection import CLEAR, Selection, Users
from tests.bulk_support import login

NOW = time.time()


def data(seen_minutes_ago: float = 0, **extra) -> dict:
    stamp = NOW - seen_minutes_ago * 60
    return {
        "patient_summary": {},
        "_patient_meta": {"ref": "r", "seen": stamp, "since": stamp},
        **extra,
    }


def decide(selection: Selection, session: dict, *, user_ok=True, expired=False, mtime=None):
    decision = selection.decide(session, expired=expired, user_ok=user_ok, now=NOW, mtime=mtime)
    return decision and (decision.action, decision.reason)


@pytest.mark.parametrize(
    ("selection", "session", "user_ok", "expired", "expected"),
    [
        (Selection(), data(), True, False, (CLEAR, "bulk_cleanup")),
        (Selection(), data(), False, False, (CLEAR, "unauthenticated_session")),
        (Selection(), data(), True, True, ("delete", "expired_session")),
        (Selection(), data(31), True, False, (CLEAR, "patient_session_timeout")),
        (Selection(), data(61), True, False, (CLEAR, "session_max_inactive")),
        (Selection(unauthenticated_only=True), data(), True, False, None),
        (Selection(expired_only=True), data(), False, False, None),
        (Selection(expired_only=True), data(31), True, False, (CLEAR, "patient_session_timeout")),
        (Selection(include_authenticated=False), data(), True, False, None),
        (
            Selection(include_authenticated=False),
            data(),
            False,
            False,
            (CLEAR, "unauthenticated_session"),
        ),
        (Selection(older_than_seconds=3600), data(30), False, False, None),
        (
            Selection(older_than_seconds=3600),
            data(61),
            False,
            False,
            (CLEAR, "session_max_inactive"),
        ),
    ],
)
def test_decide(selection, session, user_ok, expired, expected):
    assert decide(selection, session, user_ok=user_ok, expired=expired) == expected


def test_absolute_lifetime_counts_as_expired():
    session = data()
    session["_patient_meta"]["since"] = NOW - 13 * 3600
    assert decide(Selection(expired_only=True), session) == (CLEAR, "patient_session_max_age")


def test_unknown_activity_falls_back_to_file_time_then_counts_as_old():
    session = {"patient_summary": {}}
    older = Selection(older_than_seconds=3600, fallback_reason="startup_cleanup")
    assert decide(older, session, mtime=NOW - 60) is None
    assert decide(older, session) == (CLEAR, "startup_cleanup")


@pytest.mark.django_db
def test_users_checks_existence_activity_backend_and_hash():
    model = get_user_model()
    active = model.objects.create_user("active", password="synthetic-pass-1")
    inactive = model.objects.create_user("inactive", password="synthetic-pass-1", is_active=False)
    sessions = {}
    for name, user in (("active", active), ("inactive", inactive)):
        sessions[name] = {}
        login(sessions[name], user)
    sessions["wrong_hash"] = {**sessions["active"], "_auth_user_hash": "0" * 64}
    sessions["wrong_backend"] = {**sessions["active"], "_auth_user_backend": "x.Backend"}
    sessions["missing"] = {**sessions["active"], "_auth_user_id": "999999"}
    sessions["garbage_id"] = {**sessions["active"], "_auth_user_id": "not-a-number"}
    sessions["anonymous"] = {}
    users = Users()
    users.load(sessions.values())
    assert {name for name, session in sessions.items() if users.ok(session)} == {"active"}
