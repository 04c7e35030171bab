"""Malformed or out-of-range command input: one line on stderr, exit 2, nothing touched.

Run as an operator runs them (``manage.py`` in a process of its own) against a database that
has no tables: a command that reached the database before refusing would fail with a
traceback instead, so the refusal is proven to come before anything is read or changed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import startup_with_cleanup

ROOT = Path(__file__).resolve().parent.parent


def _manage(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        NCP_VAR_DIR=str(tmp_path),
        DEBUG="0",
        SECRET_KEY="command-input-tests-" + "k" * 40,
        SESSION_ENGINE="patient_data.sessions.db",
    )
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


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
def test_bad_input_is_one_line_and_exit_2_before_anything_is_touched(tmp_path, args, message):
    result = _manage(tmp_path, *args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr
    assert result.stdout == ""
    assert not Path("/nonexistent-folder").exists()


@pytest.mark.parametrize("hours", ["nan", "inf", "0", "1e300"])
def test_the_start_up_script_refuses_bad_hours_before_starting_anything(hours):
    with pytest.raises(SystemExit) as caught:
        startup_with_cleanup.parse_args(["--older-than-hours", hours])
    assert caught.value.code == 2
