"""One test per system check id."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import override_settings

from patient_data import checks

SECURITY = checks.SECURITY
CLEANUP = checks.CLEANUP


def _ids(messages) -> list[str]:
    return [message.id for message in messages]


def test_the_project_settings_pass():
    assert checks.check_timeouts() == []
    assert checks.check_middleware() == []
    assert checks.check_registry() == []
    assert checks.check_sessions() == []


@pytest.mark.parametrize(
    ("name", "check_id"),
    [
        ("PATIENT_SESSION_TIMEOUT", "patient_data.E001"),
        ("PATIENT_MAX_INACTIVE_TIME", "patient_data.E002"),
        ("PATIENT_SESSION_MAX_AGE", "patient_data.E003"),
        ("PATIENT_SESSION_ABSOLUTE_MAX_AGE", "patient_data.E020"),
    ],
)
@pytest.mark.parametrize("value", [0, -5, "30", None, True])
def test_timeouts_must_be_positive_numbers(name, check_id, value):
    with override_settings(**{name: value}):
        assert check_id in _ids(checks.check_timeouts())


def test_max_inactive_below_timeout_is_refused():
    with override_settings(PATIENT_SESSION_TIMEOUT=30, PATIENT_MAX_INACTIVE_TIME=20):
        assert _ids(checks.check_timeouts()) == ["patient_data.E004"]


@pytest.mark.parametrize("interval", [-1, 30 * 60, "15"])
def test_activity_interval_must_fit_in_the_timeout(interval):
    with override_settings(PATIENT_ACTIVITY_WRITE_INTERVAL=interval):
        assert _ids(checks.check_timeouts()) == ["patient_data.E005"]


def _without(name: str) -> list[str]:
    return [entry for entry in settings.MIDDLEWARE if entry != name]


def test_missing_security_middleware():
    with override_settings(MIDDLEWARE=_without(SECURITY)):
        assert _ids(checks.check_middleware()) == ["patient_data.E006"]


def test_missing_cleanup_middleware():
    with override_settings(MIDDLEWARE=_without(CLEANUP)):
        assert _ids(checks.check_middleware()) == ["patient_data.E007"]


def test_middleware_before_auth_is_refused():
    order = _without(SECURITY)
    order.insert(order.index(checks.SESSION_MW) + 1, SECURITY)
    with override_settings(MIDDLEWARE=order):
        assert _ids(checks.check_middleware()) == ["patient_data.E008"]


def test_invalid_registry_key():
    with override_settings(PATIENT_SESSION_KEYS=["_patient_meta"]):
        assert _ids(checks.check_registry()) == ["patient_data.E009"]


@pytest.mark.parametrize("prefix", ["", "p", "_pat"])
def test_prefix_that_covers_everything_is_refused(prefix):
    with override_settings(PATIENT_SESSION_KEY_PREFIXES=[prefix]):
        assert _ids(checks.check_registry()) == ["patient_data.E010"]


def test_unguarded_session_engine_warns():
    with override_settings(SESSION_ENGINE="django.contrib.sessions.backends.db"):
        assert _ids(checks.check_sessions()) == ["patient_data.W001"]


def test_save_every_request_warns():
    with override_settings(SESSION_SAVE_EVERY_REQUEST=True):
        assert _ids(checks.check_sessions()) == ["patient_data.W002"]


def test_sqlite_without_immediate_transactions_warns():
    databases = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "x", "OPTIONS": {}}}
    assert _ids(checks.sqlite_warnings(databases)) == ["patient_data.W003"]
    databases["default"]["OPTIONS"]["transaction_mode"] = "IMMEDIATE"
    assert checks.sqlite_warnings(databases) == []


def test_databases_without_upsert_returning_are_refused():
    sqlite = {"ENGINE": "django.db.backends.sqlite3", "NAME": "x"}
    postgres = {"ENGINE": "django.db.backends.postgresql", "NAME": "x"}
    mysql = {"ENGINE": "django.db.backends.mysql", "NAME": "x"}
    assert checks.database_errors({"a": sqlite, "b": postgres}, (3, 35, 0)) == []
    errors = checks.database_errors({"a": sqlite, "b": postgres, "c": mysql}, (3, 34, 1))
    assert _ids(errors) == ["patient_data.E011", "patient_data.E011"]
    assert "'a' (SQLite 3.34.1)" in errors[0].msg
    assert "'c' (django.db.backends.mysql)" in errors[1].msg
    assert checks.check_databases() == []  # this project's own databases


@pytest.mark.parametrize("value", [-1, "60", None, True])
def test_hidden_timeout_must_be_seconds_or_zero(value):
    with override_settings(PATIENT_HIDDEN_TIMEOUT=value):
        assert _ids(checks.check_page_timers()) == ["patient_data.E050"]


@pytest.mark.parametrize("value", [0, 45, 2.5])
def test_hidden_timeout_of_zero_or_seconds_passes(value):
    with override_settings(PATIENT_HIDDEN_TIMEOUT=value):
        assert checks.check_page_timers() == []
