"""Item 22 of issue 9, end to end: once ``startup_cleanup_patient_sessions --force`` returns,
no server process serves patient data from before it, although each process trusts its copy
of the epoch for PATIENT_EPOCH_CACHE_SECONDS."""

from __future__ import annotations

import pytest

from tests.daphne_support import Browser, daphne, manage, production_env

#: Long enough that the command (a fresh Django process, well under this) returns inside the
#: window of the copy the server read just before it, unless it waits that window out.
CACHE_SECONDS = "6"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return production_env(
        tmp_path_factory.mktemp("epoch-var"), PATIENT_EPOCH_CACHE_SECONDS=CACHE_SECONDS
    )


def test_patient_data_is_void_in_the_server_when_the_command_returns(env):
    with daphne(env) as base:
        browser = Browser(base)
        browser.log_in()
        browser.open_a_patient()
        assert browser.status()["has_patient_data"] is True  # the server caches the epoch now
        done = manage(env, "startup_cleanup_patient_sessions", "--force")
        assert "epoch was advanced from 0 to 1" in done.stdout
        after = browser.status()
        assert after["has_patient_data"] is False
        assert after["authenticated"] is True
