"""Abuse of the cleanup endpoints: no audit rows for nothing, rate limits per session and
per client address, and never a limit between a session and the removal of its data."""

from __future__ import annotations

import secrets

import pytest
from django.core.cache.backends.locmem import LocMemCache
from django.test import override_settings

from patient_data import checks, ratelimit
from patient_data.models import CleanupEvent
from tests.conftest import Driver

CLEAR = "/api/clear-patient-session/"
EMERGENCY = "/api/emergency-session-cleanup/"
KINDS = ["sync", "async"]


def _from_new_address(kind: str) -> Driver:
    """A client at an address of its own: the counters of other tests never reach it."""
    return Driver.at(kind, f"2001:db8::{secrets.token_hex(2)}:{secrets.token_hex(2)}")


@pytest.mark.parametrize("path", [CLEAR, EMERGENCY])
def test_anonymous_posts_end_nothing_and_write_no_audit_row(driver, path):
    for _ in range(5):
        response = driver.post(path)
        assert response.json() == {"success": True, "items_cleared": 0}
    assert not CleanupEvent.objects.exists()


def test_ending_a_login_without_patient_data_is_still_audited(logged_in):
    logged_in.post(EMERGENCY)
    logged_in.post(EMERGENCY)
    rows = list(CleanupEvent.objects.values_list("action", "reason", "items_cleared"))
    assert rows == [("end_session", "emergency_cleanup", 0)]


@pytest.mark.django_db
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("path", [CLEAR, EMERGENCY])
@override_settings(PATIENT_CLEANUP_RATE_PER_ADDRESS=3, PATIENT_CLEANUP_RATE_WINDOW=600)
def test_one_address_is_limited_with_a_json_429_and_retry_after(kind, path):
    attacker = _from_new_address(kind)
    assert [attacker.post(path).status_code for _ in range(3)] == [200, 200, 200]
    response = attacker.post(path)
    assert response.status_code == 429
    assert response.json() == {
        "success": False,
        "error": "rate_limited",
        "message": "Too many cleanup requests. Wait a moment.",
    }
    assert 1 <= int(response["Retry-After"]) <= 600
    assert _from_new_address(kind).post(path).status_code == 200


@override_settings(PATIENT_CLEANUP_RATE_PER_SESSION=2, PATIENT_CLEANUP_RATE_WINDOW=600)
def test_one_session_is_limited_and_others_at_the_same_address_are_not(driver, clinician):
    driver.force_login(clinician)
    assert [driver.post(CLEAR).status_code for _ in range(3)] == [200, 200, 429]
    colleague = Driver(driver.kind)
    colleague.force_login(clinician)
    assert colleague.post(CLEAR).status_code == 200


@override_settings(PATIENT_CLEANUP_RATE_PER_SESSION=1, PATIENT_CLEANUP_RATE_WINDOW=600)
def test_a_session_holding_patient_data_is_cleared_whatever_the_counters(logged_in):
    assert [logged_in.post(CLEAR).status_code for _ in range(2)] == [200, 429]
    assert logged_in.get("/_test/store/").status_code == 200
    assert logged_in.post(CLEAR).json() == {"success": True, "items_cleared": 3}
    assert "patient_summary" not in logged_in.stored()


@override_settings(PATIENT_CLEANUP_RATE_PER_ADDRESS=2, PATIENT_CLEANUP_RATE_WINDOW=600)
@pytest.mark.parametrize("kind", KINDS)
def test_cleanups_that_clear_patient_data_do_not_use_up_the_address_s_allowance(
    kind, clinician, monkeypatch
):
    """Colleagues behind one address (a hospital's NAT): their real cleanups are never
    refused and leave the allowance to the requests with nothing to clear; they cost no
    round trip to the counters."""
    charged = []
    charge = ratelimit.aexceeded

    async def counted(request, endpoint):
        charged.append(endpoint)
        return await charge(request, endpoint)

    monkeypatch.setattr(ratelimit, "aexceeded", counted)
    address = f"2001:db8::{secrets.token_hex(2)}:{secrets.token_hex(2)}"
    for _ in range(3):
        colleague = Driver.at(kind, address)
        colleague.force_login(clinician)
        assert colleague.get("/_test/store/").status_code == 200
        assert colleague.post(CLEAR).json() == {"success": True, "items_cleared": 3}
    assert charged == []
    idle = Driver.at(kind, address)
    assert [idle.post(CLEAR).status_code for _ in range(3)] == [200, 200, 429]
    assert charged == ["clear"] * 3


LOCMEM = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
#: Nothing listens on port 1: every connection is refused at once.
REDIS_DOWN = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",
        "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
    }
}


@override_settings(PATIENT_CLEANUP_RATE_PER_SESSION=1, PATIENT_CLEANUP_RATE_WINDOW=600)
def test_an_unreachable_cache_skips_the_limit_and_serves(logged_in, monkeypatch, caplog):
    """Django's cache API (other backends): its calls fail."""

    async def down(*args, **kwargs):
        raise ConnectionError("cache down")

    monkeypatch.setattr(LocMemCache, "aincr", down)
    with override_settings(CACHES=LOCMEM):
        assert [logged_in.post(CLEAR).status_code for _ in range(3)] == [200, 200, 200]
    assert "Cleanup rate limit skipped: cache unavailable (ConnectionError)." in caplog.messages


@override_settings(
    PATIENT_CLEANUP_RATE_PER_SESSION=1, PATIENT_CLEANUP_RATE_WINDOW=600, CACHES=REDIS_DOWN
)
def test_an_unreachable_redis_skips_the_limit_and_serves(logged_in, caplog):
    """Django's Redis cache (charged from the event loop): the server refuses connections."""
    assert [logged_in.post(CLEAR).status_code for _ in range(3)] == [200, 200, 200]
    assert "Cleanup rate limit skipped: cache unavailable (ConnectionError)." in caplog.messages


@pytest.mark.parametrize(
    ("overrides", "check_id"),
    [
        ({"PATIENT_CLEANUP_RATE_WINDOW": 0}, "patient_data.E040"),
        ({"PATIENT_CLEANUP_RATE_PER_SESSION": -1}, "patient_data.E041"),
        ({"PATIENT_CLEANUP_RATE_PER_ADDRESS": 2.5}, "patient_data.E041"),
    ],
)
def test_unusable_rate_limits_are_refused_at_start_up(overrides, check_id):
    with override_settings(**overrides):
        assert [m.id for m in checks.check_cleanup_rate_limits()] == [check_id]


def test_the_default_rate_limits_pass_the_check():
    assert checks.check_cleanup_rate_limits() == []
