"""Every answer under /api/ is JSON with a stable code, whatever went wrong and where."""

from __future__ import annotations

import pytest
from django.test import override_settings

from tests.conftest import Driver

CLEAR = "/api/clear-patient-session/"
KINDS = ["sync", "async"]


def _browser(kind: str) -> Driver:
    """CSRF enforced, as in production, with a valid token: the body is what fails."""
    browser = Driver(kind, enforce_csrf_checks=True, raise_request_exception=False)
    browser.get("/accounts/login/")
    return browser


def _post(browser: Driver, body: bytes, content_type: str):
    token = browser.client.cookies["csrftoken"].value
    return browser.post(CLEAR, data=body, content_type=content_type, headers={"X-CSRFToken": token})


def _assert_json_error(response, status: int, code: str) -> None:
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert (body["success"], body["error"]) == (False, code)


@pytest.mark.django_db
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("content_type", ["multipart/form-data", "multipart/form-data; boundary="])
def test_a_multipart_body_without_boundary_gets_a_json_400(kind, content_type):
    _assert_json_error(_post(_browser(kind), b"--x\r\n", content_type), 400, "malformed_body")


@pytest.mark.django_db
@pytest.mark.parametrize("kind", KINDS)
@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1024)
def test_a_body_over_the_upload_limit_gets_a_json_413(kind):
    body = b"a=" + b"x" * 4096
    response = _post(_browser(kind), body, "application/x-www-form-urlencoded")
    _assert_json_error(response, 413, "body_too_large")


@pytest.mark.django_db
@pytest.mark.parametrize("kind", KINDS)
@override_settings(DATA_UPLOAD_MAX_NUMBER_FIELDS=10)
def test_too_many_fields_get_a_json_413(kind):
    body = "&".join(f"f{n}=1" for n in range(50)).encode()
    response = _post(_browser(kind), body, "application/x-www-form-urlencoded")
    _assert_json_error(response, 413, "body_too_large")


@pytest.mark.django_db
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("path", ["/api/", "/api/no-such-endpoint/", "/api/session-status/x"])
def test_an_unknown_api_path_gets_a_json_404(kind, path):
    _assert_json_error(_browser(kind).get(path), 404, "not_found")


@pytest.mark.django_db
@pytest.mark.parametrize("kind", KINDS)
def test_an_unexpected_error_under_the_api_gets_a_json_500_without_its_text(kind):
    response = _browser(kind).get("/api/_test/boom/")
    _assert_json_error(response, 500, "server_error")
    assert b"unexpected failure" not in response.content


@pytest.mark.django_db
@pytest.mark.parametrize("kind", KINDS)
def test_other_paths_keep_django_pages(kind):
    response = _browser(kind).get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")
