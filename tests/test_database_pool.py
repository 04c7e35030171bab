"""The PostgreSQL connection pool: bounded by settings, checked at start-up, and a database out
of reach (no pooled connection free in time, too many clients) answers 503, never a 500."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import OperationalError, connection

from ncp_asgi.env import database_from_url, env_number, postgres_pool
from patient_data.checks import pool_errors
from patient_data.sessions.db import SessionStore
from tests.conftest import browser_with_patient_data

CLEAR = "/api/clear-patient-session/"
KINDS = ["sync", "async"]
URL = "postgres://ncp@db.internal:5432/ncp"


def test_the_pool_is_bounded_by_the_settings():
    db = database_from_url(URL, Path("/srv"), pool=postgres_pool(15, 4.0))
    assert db["OPTIONS"]["pool"] == {"min_size": 2, "max_size": 15, "timeout": 4.0}
    assert db["CONN_MAX_AGE"] == 0


def test_size_zero_means_no_pool():
    assert postgres_pool(0, 10.0) is None
    assert "pool" not in database_from_url(URL, Path("/srv"), pool=None)["OPTIONS"]


def test_sqlite_gets_no_pool():
    db = database_from_url("sqlite:////tmp/x.sqlite3", Path("/srv"), pool=postgres_pool(5, 1.0))
    assert "pool" not in db["OPTIONS"]


def test_pool_settings_from_the_environment_must_be_numbers(monkeypatch):
    monkeypatch.setenv("DATABASE_POOL_MAX_SIZE", "many")
    with pytest.raises(ImproperlyConfigured, match="DATABASE_POOL_MAX_SIZE"):
        env_number("DATABASE_POOL_MAX_SIZE", 20, integer=True)
    monkeypatch.setenv("DATABASE_POOL_MAX_SIZE", "7")
    assert env_number("DATABASE_POOL_MAX_SIZE", 20, integer=True) == 7


def _ids(databases: dict) -> list[str]:
    return [error.id for error in pool_errors(databases)]


def test_checks_refuse_a_pool_with_persistent_connections():
    pooled = database_from_url(URL + "?conn_max_age=60", Path("/srv"), pool=postgres_pool(5, 1))
    assert _ids({"default": pooled}) == ["patient_data.E070"]
    plain = database_from_url(URL + "?conn_max_age=60", Path("/srv"), pool=None)
    assert _ids({"default": plain}) == []


def test_checks_refuse_a_pool_without_psycopg_pool(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "psycopg_pool", None)  # import fails
    pooled = database_from_url(URL, Path("/srv"), pool=postgres_pool(5, 1))
    assert _ids({"default": pooled}) == ["patient_data.E071"]


@pytest.mark.parametrize("pool", [{"max_size": 0}, {"max_size": 5, "timeout": 0}])
def test_checks_refuse_a_pool_that_cannot_hand_out_a_connection(pool):
    pooled = database_from_url(URL, Path("/srv"))
    pooled["OPTIONS"]["pool"] = pool
    assert _ids({"default": pooled}) == ["patient_data.E072"]


def test_the_project_settings_pass_the_checks():
    from django.conf import settings

    assert pool_errors(settings.DATABASES) == []


def _assert_503(response) -> None:
    assert response.status_code == 503
    assert response["Retry-After"] == "2"
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "success": False,
        "error": "service_unavailable",
        "message": "The service is busy. Try again in a moment.",
    }


def _database_away(monkeypatch) -> None:
    def away(*args, **kwargs):
        raise OperationalError("sorry, too many clients already")

    monkeypatch.setattr(SessionStore, "load", away)
    monkeypatch.setattr(SessionStore, "aload", away)


@pytest.mark.django_db
@pytest.mark.parametrize("kind", KINDS)
def test_a_database_out_of_reach_in_the_middleware_is_a_json_503(clinician, kind, monkeypatch):
    browser = browser_with_patient_data(clinician, kind, raise_request_exception=False)
    _database_away(monkeypatch)
    _assert_503(browser.post(CLEAR))


@pytest.mark.django_db
@pytest.mark.parametrize("kind", KINDS)
def test_a_database_out_of_reach_in_the_view_is_a_json_503(clinician, kind, monkeypatch):
    from patient_data import cleanup

    browser = browser_with_patient_data(clinician, kind, raise_request_exception=False)

    async def away(*args, **kwargs):
        raise OperationalError("couldn't get a connection after 10.00 sec")

    monkeypatch.setattr(cleanup, "aclear_patient_session_data", away)
    _assert_503(browser.post(CLEAR))


@pytest.mark.django_db
@pytest.mark.parametrize("kind", KINDS)
def test_a_page_gets_the_portal_busy_page(clinician, kind, monkeypatch):
    browser = browser_with_patient_data(clinician, kind, raise_request_exception=False)
    _database_away(monkeypatch)
    response = browser.get("/patients/")
    assert response.status_code == 503
    assert response["Retry-After"] == "2"
    assert b"The portal is busy" in response.content
    assert b"too many clients" not in response.content


@pytest.mark.django_db
@pytest.mark.parametrize("kind", KINDS)
def test_other_database_errors_stay_500(clinician, kind, monkeypatch):
    from django.db import IntegrityError

    browser = browser_with_patient_data(clinician, kind, raise_request_exception=False)

    def broken(*args, **kwargs):
        raise IntegrityError("not about availability")

    monkeypatch.setattr(SessionStore, "load", broken)
    monkeypatch.setattr(SessionStore, "aload", broken)
    response = browser.post(CLEAR)
    assert response.status_code == 500
    assert response.json()["error"] == "server_error"


@pytest.fixture
def pool_of_one():
    """The real pool, shrunk to one connection handed out within 0.3 s (PostgreSQL only)."""
    if connection.vendor != "postgresql" or not connection.settings_dict["OPTIONS"].get("pool"):
        pytest.skip("needs PostgreSQL with the connection pool (DATABASE_URL=postgres://...)")
    options = connection.settings_dict["OPTIONS"]
    saved = options["pool"]
    connection.close()
    connection.close_pool()
    options["pool"] = {"min_size": 1, "max_size": 1, "timeout": 0.3}
    try:
        yield
    finally:
        connection.close()
        connection.close_pool()
        options["pool"] = saved


@pytest.mark.django_db(transaction=True)
def test_an_exhausted_pool_makes_requests_wait_then_answers_503(clinician, pool_of_one):
    browser = browser_with_patient_data(clinician, "async", raise_request_exception=False)
    connection.close()  # back to the pool: the one connection is free again
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:  # another thread holds the only connection
        from django.db import connection as theirs

        theirs.ensure_connection()
        taken.set()
        release.wait(10)
        theirs.close()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert taken.wait(10)
        _assert_503(browser.post(CLEAR))
    finally:
        release.set()
        holder.join(10)
    # Once the connection is back, the same request succeeds: it waited, nothing was lost.
    assert browser.post(CLEAR).json() == {"success": True, "items_cleared": 3}
