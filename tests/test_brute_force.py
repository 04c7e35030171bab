"""Brute-force protection of the portal and admin sign-in (django-axes): per username and per
client address, recorded without the password."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib.auth import get_user_model
from django.utils import timezone

from tests.conftest import Driver

PASSWORD = "synthetic-right-pass-1"
WRONG = "synthetic-wrong-guess-"
PATHS = ["/accounts/login/", "/admin/login/"]
KINDS = ["sync", "async"]


@pytest.fixture
def staff(db):
    return get_user_model().objects.create_user("staff-1", password=PASSWORD, is_staff=True)


def _sign_in(browser: Driver, path: str, username: str, password: str):
    return browser.post(path, data={"username": username, "password": password})


def _signed_in(browser: Driver) -> bool:
    return browser.get("/_test/whoami/").json()["authenticated"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("path", PATHS)
def test_a_hundred_wrong_passwords_then_the_right_one_does_not_sign_in(staff, kind, path):
    browser = Driver.at(kind, "192.0.2.10")
    for attempt in range(100):
        assert _sign_in(browser, path, "staff-1", f"{WRONG}{attempt}").status_code in (200, 429)
    response = _sign_in(browser, path, "staff-1", PASSWORD)
    assert response.status_code == 429
    assert b"Too many failed sign-in attempts" in response.content
    assert not _signed_in(browser)


@pytest.mark.parametrize("kind", KINDS)
def test_the_username_is_locked_whatever_the_address(staff, kind):
    for number in range(5):
        _sign_in(Driver.at(kind, f"192.0.2.{20 + number}"), PATHS[0], "staff-1", WRONG)
    elsewhere = Driver.at(kind, "192.0.2.99")
    assert _sign_in(elsewhere, PATHS[0], "staff-1", PASSWORD).status_code == 429
    assert not _signed_in(elsewhere)


@pytest.mark.parametrize("kind", KINDS)
def test_the_address_is_locked_whatever_the_username(staff, kind):
    attacker = Driver.at(kind, "192.0.2.30")
    for number in range(5):
        _sign_in(attacker, PATHS[0], f"guess-{number}", WRONG)
    assert _sign_in(attacker, PATHS[0], "staff-1", PASSWORD).status_code == 429
    assert not _signed_in(attacker)
    colleague = Driver.at(kind, "192.0.2.31")
    assert _sign_in(colleague, PATHS[0], "staff-1", PASSWORD).status_code == 302
    assert _signed_in(colleague)


def test_the_lockout_ends_after_the_cool_off(staff):
    browser = Driver.at("sync", "192.0.2.40")
    for _ in range(5):
        _sign_in(browser, PATHS[0], "staff-1", WRONG)
    assert _sign_in(browser, PATHS[0], "staff-1", PASSWORD).status_code == 429
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=16))
    assert _sign_in(browser, PATHS[0], "staff-1", PASSWORD).status_code == 302
    assert _signed_in(browser)


def test_a_success_below_the_limit_resets_the_count(staff):
    browser = Driver.at("sync", "192.0.2.50")
    for _ in range(4):
        _sign_in(browser, PATHS[0], "staff-1", WRONG)
    assert _sign_in(browser, PATHS[0], "staff-1", PASSWORD).status_code == 302
    browser.post("/accounts/logout/")
    for _ in range(4):
        _sign_in(browser, PATHS[0], "staff-1", WRONG)
    assert _sign_in(browser, PATHS[0], "staff-1", PASSWORD).status_code == 302


def test_attempts_are_recorded_without_the_password(staff, caplog):
    browser = Driver.at("sync", "192.0.2.60")
    with caplog.at_level(logging.DEBUG):
        for _ in range(6):
            _sign_in(browser, PATHS[1], "staff-1", WRONG + "secret")
        _sign_in(browser, PATHS[1], "staff-1", PASSWORD)
    attempt = AccessAttempt.objects.get()
    assert (attempt.username, attempt.ip_address) == ("staff-1", "192.0.2.60")
    assert attempt.failures_since_start >= 5
    recorded = [
        *AccessAttempt.objects.values_list(),
        *AccessFailureLog.objects.values_list(),
        *AccessLog.objects.values_list(),
    ]
    for secret in (WRONG, PASSWORD):
        assert secret not in repr(recorded)
        assert secret not in caplog.text
