"""Malformed or out-of-range command input: one line on stderr, exit 2, nothing touched.

Each command runs the way ``manage.py`` runs it (``run_from_argv``: the exit code and the
message an operator sees) with no database query allowed: the refusal comes before anything
is read or changed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.management import get_commands, load_command_class
from django.db import connection

import startup_with_cleanup


@pytest.fixture
def quiet_database(db, django_assert_num_queries):
    """No query allowed, after the one-off probe of the database's features that the system
    checks (run by every command) make at first use."""
    assert connection.features.supports_json_field is not None
    return django_assert_num_queries(0)


def _run(*argv: str) -> int:
    name = argv[0]
    command = load_command_class(get_commands()[name], name)
    with pytest.raises(SystemExit) as exited:
        command.run_from_argv(["manage.py", *argv])
    return exited.value.code


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["patient_session_audit", "--until", "9999-12-31"], "out of range"),
        (["patient_session_audit", "--since", "2026-02-30"], "Not an ISO date"),
        (["patient_session_audit", "--output", "/nonexistent-folder/audit.csv"], "--output"),
        (["cleanup_patient_sessions", "--force", "--batch-size", "10000000000000"], "--batch"),
        (["cleanup_patient_sessions", "--force", "--batch-size", "0"], "--batch-size"),
        (["startup_cleanup_patient_sessions", "--force", "--older-than-hours", "nan"], "hours"),
        (["startup_cleanup_patient_sessions", "--force", "--older-than-hours", "inf"], "hours"),
        (["startup_cleanup_patient_sessions", "--force", "--older-than-hours", "1e300"], "hours"),
        (["startup_cleanup_patient_sessions", "--force", "--older-than-hours", "-1"], "hours"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_anything_is_touched(
    args, message, capsys, quiet_database
):
    with quiet_database:
        assert _run(*args) == 2
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("CommandError: ") and message in err
    assert out == ""
    assert not Path("/nonexistent-folder").exists()


@pytest.mark.parametrize("hours", ["nan", "inf", "0", "1e300"])
def test_the_start_up_script_refuses_bad_hours_before_starting_anything(hours):
    with pytest.raises(SystemExit) as caught:
        startup_with_cleanup.parse_args(["--older-than-hours", hours])
    assert caught.value.code == 2
