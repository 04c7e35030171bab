"""The inline adapter: Django's I/O-free middlewares run in the event loop, refused where a
hook would do I/O (check ``patient_data.E060``), Django's behaviour everywhere."""

from __future__ import annotations

import io
import json
from urllib.parse import urlencode

import pytest
from django.conf import settings
from django.core.checks import run_checks
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware as DjangoCsrfViewMiddleware
from django.middleware.security import SecurityMiddleware as DjangoSecurityMiddleware
from django.test import RequestFactory, override_settings
from django.utils.crypto import get_random_string

from bench.settings_stock import MIDDLEWARE as DJANGO_STACK
from patient_data import checks
from patient_data.middleware import inline

INLINE_CSRF = "patient_data.middleware.inline.CsrfViewMiddleware"
INLINE_MESSAGES = "patient_data.middleware.inline.MessageMiddleware"
FORM = "application/x-www-form-urlencoded"


async def _async_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


def _sync_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


async def _through_csrf(middleware_class: type, request: HttpRequest, hops: list[str]):
    middleware = middleware_class(_async_view)
    hops.clear()
    response = await middleware.process_view(request, _async_view, (), {})
    return response, list(hops)


@pytest.mark.parametrize(
    "name", ["SecurityMiddleware", "CommonMiddleware", "XFrameOptionsMiddleware"]
)
async def test_the_adapted_hooks_run_without_a_thread_hop(name, hops):
    response = await getattr(inline, name)(_async_view)(RequestFactory().get("/"))
    assert response.status_code == 200
    assert hops == []


async def test_django_s_class_hops_twice_where_the_adapted_one_does_not(hops):
    request = RequestFactory().get("/")
    django_response = await DjangoSecurityMiddleware(_async_view)(request)
    assert len(hops) == 2
    hops.clear()
    ours = await inline.SecurityMiddleware(_async_view)(RequestFactory().get("/"))
    assert hops == []
    assert dict(ours.items()) == dict(django_response.items())


async def test_the_adapted_class_is_django_s_class():
    assert issubclass(inline.CsrfViewMiddleware, DjangoCsrfViewMiddleware)
    assert inline.CsrfViewMiddleware.adapts == "django.middleware.csrf.CsrfViewMiddleware"
    assert inline.CsrfViewMiddleware.__name__ == "CsrfViewMiddleware"


async def test_csrf_checks_a_safe_method_inline(hops):
    response, used = await _through_csrf(inline.CsrfViewMiddleware, RequestFactory().get("/"), hops)
    assert response is None
    assert used == []


def _post(body=None, *, token: str | None = None, **extra) -> HttpRequest:
    """A POST through the CSRF check (RequestFactory's requests skip it unless told)."""
    data = body if body is not None else {"field": "value"}
    if token is not None and isinstance(data, dict):
        data = {**data, "csrfmiddlewaretoken": token}
    if isinstance(data, dict) and not any(hasattr(v, "read") for v in data.values()):
        data, extra = urlencode(data), {"content_type": FORM, **extra}  # a browser's form
    request = RequestFactory().post("/", data, **extra)
    request._dont_enforce_csrf_checks = False
    return request


def _with_secret(request: HttpRequest, secret: str | None = None) -> HttpRequest:
    request.COOKIES[settings.CSRF_COOKIE_NAME] = secret or get_random_string(32)
    return request


async def test_csrf_accepts_a_form_post_inline(hops):
    secret = get_random_string(32)
    request = _with_secret(_post(token=secret), secret)
    response, used = await _through_csrf(inline.CsrfViewMiddleware, request, hops)
    assert response is None
    assert used == []  # the body was parsed from memory, in the loop


async def test_csrf_accepts_an_api_call_with_the_header_inline(hops):
    secret = get_random_string(32)
    request = _post(b"", content_type="application/json", headers={"X-CSRFToken": secret})
    request.COOKIES[settings.CSRF_COOKIE_NAME] = secret
    response, used = await _through_csrf(inline.CsrfViewMiddleware, request, hops)
    assert response is None
    assert used == []


async def test_csrf_refuses_a_post_without_its_token_with_the_failure_view_in_a_thread(hops):
    request = _with_secret(_post())
    response, used = await _through_csrf(inline.CsrfViewMiddleware, request, hops)
    assert used == ["CsrfViewMiddleware._reject"]  # the check inline, the failure view not
    expected = DjangoCsrfViewMiddleware(_sync_view).process_view(request, _sync_view, (), {})
    assert response.status_code == expected.status_code == 403
    assert response["Content-Type"] == expected["Content-Type"]
    # The portal's failure page (CSRF_FAILURE_VIEW), which asks whether a user is signed in.
    assert b"Your page was out of date" in response.content
    assert not hasattr(request, "_ncp_csrf_defer_reject")


async def test_csrf_refuses_an_api_call_without_a_cookie_as_json(hops):
    request = RequestFactory().post(
        "/api/clear-patient-session/", content_type="application/json", headers={"X-CSRFToken": "x"}
    )
    request._dont_enforce_csrf_checks = False
    response, used = await _through_csrf(inline.CsrfViewMiddleware, request, hops)
    assert used == ["CsrfViewMiddleware._reject"]
    assert response.status_code == 403
    assert json.loads(response.content)["error"] == "csrf_failed"


async def test_csrf_checks_a_multipart_post_in_a_thread_and_still_refuses_it(hops):
    request = _with_secret(_post({"field": "value", "upload": io.BytesIO(b"file")}))
    assert request.content_type == "multipart/form-data"
    response, used = await _through_csrf(inline.CsrfViewMiddleware, request, hops)
    assert response.status_code == 403
    assert used == ["CsrfViewMiddleware.process_view"]  # the whole check, failure view in it


@override_settings(FILE_UPLOAD_MAX_MEMORY_SIZE=10)
async def test_csrf_checks_a_body_spooled_to_disk_in_a_thread(hops):
    secret = get_random_string(32)
    request = _with_secret(_post({"field": "a longer value than ten bytes"}, token=secret), secret)
    response, used = await _through_csrf(inline.CsrfViewMiddleware, request, hops)
    assert response is None
    assert used == ["CsrfViewMiddleware.process_view"]


@pytest.mark.parametrize(
    ("meta", "in_memory"),
    [
        ({}, True),
        ({"CONTENT_LENGTH": "5"}, True),
        ({"CONTENT_LENGTH": "x"}, False),
        ({"CONTENT_LENGTH": "-1"}, False),
        ({"CONTENT_LENGTH": "limit"}, True),
        ({"CONTENT_LENGTH": "over"}, False),
    ],
)
def test_which_bodies_are_parsed_from_memory(meta, in_memory):
    request = RequestFactory().generic("POST", "/", content_type="text/plain")
    request.META.pop("CONTENT_LENGTH", None)
    limit = settings.FILE_UPLOAD_MAX_MEMORY_SIZE
    lengths = {"limit": str(limit), "over": str(limit + 1)}
    request.META.update({k: lengths.get(v, v) for k, v in meta.items()})
    assert inline.body_parsed_in_memory(request) is in_memory


async def test_csrf_sets_its_cookie_inline(hops):
    from django.middleware.csrf import get_token

    async def view(request: HttpRequest) -> HttpResponse:
        get_token(request)
        return HttpResponse("ok")

    response = await inline.CsrfViewMiddleware(view)(RequestFactory().get("/"))
    assert settings.CSRF_COOKIE_NAME in response.cookies
    assert hops == []


@override_settings(CSRF_USE_SESSIONS=True)
async def test_csrf_in_the_session_keeps_django_s_hops(hops):
    middleware = inline.CsrfViewMiddleware(_async_view)
    assert middleware.runs_inline is False
    request = RequestFactory().get("/")
    request.session = {}
    await middleware(request)
    assert hops == ["CsrfViewMiddleware.process_request", "CsrfViewMiddleware.process_response"]


def test_the_sync_mode_is_django_s():
    middleware = inline.XFrameOptionsMiddleware(_sync_view)
    assert middleware.runs_inline is False
    assert middleware(RequestFactory().get("/"))["X-Frame-Options"] == "DENY"


def test_the_project_settings_may_run_inline():
    assert checks.check_inline_middleware() == []
    assert run_checks(tags=["admin"]) == []  # Django's admin finds its middlewares (subclasses)


@override_settings(CSRF_USE_SESSIONS=True)
def test_csrf_in_the_session_is_refused():
    errors = checks.check_inline_middleware()
    assert [error.id for error in errors] == ["patient_data.E060"]
    assert INLINE_CSRF in errors[0].msg
    assert "CSRF_USE_SESSIONS" in errors[0].msg
    assert "django.middleware.csrf.CsrfViewMiddleware" in errors[0].hint


@pytest.mark.parametrize(
    "storage",
    [
        "django.contrib.messages.storage.fallback.FallbackStorage",
        "django.contrib.messages.storage.session.SessionStorage",
    ],
)
def test_messages_that_can_reach_the_session_are_refused(storage):
    with override_settings(MESSAGE_STORAGE=storage):
        errors = checks.check_inline_middleware()
        assert [error.id for error in errors] == ["patient_data.E060"]
        assert INLINE_MESSAGES in errors[0].msg
        assert inline.MessageMiddleware(_async_view).runs_inline is False


@override_settings(CSRF_USE_SESSIONS=True, MIDDLEWARE=DJANGO_STACK)
def test_django_s_own_classes_are_never_refused():
    assert checks.check_inline_middleware() == []


@override_settings(MIDDLEWARE=DJANGO_STACK)
def test_django_s_session_and_auth_middlewares_satisfy_the_order_check():
    assert checks.check_middleware() == []
