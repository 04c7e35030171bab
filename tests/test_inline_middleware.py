"""The inline adapter: Django's I/O-free middlewares run in the event loop, refused where a
hook would do I/O (check ``patient_data.E060``), Django's behaviour everywhere."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.core.checks import run_checks
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware as DjangoCsrfViewMiddleware
from django.middleware.security import SecurityMiddleware as DjangoSecurityMiddleware
from django.test import RequestFactory, override_settings

from bench.settings_stock import MIDDLEWARE as DJANGO_STACK
from patient_data import checks
from patient_data.middleware import inline

INLINE_CSRF = "patient_data.middleware.inline.CsrfViewMiddleware"
INLINE_MESSAGES = "patient_data.middleware.inline.MessageMiddleware"


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


async def test_csrf_checks_an_unsafe_method_in_a_thread_and_still_refuses_it(hops):
    request = RequestFactory().post("/", {"field": "value"})
    request._dont_enforce_csrf_checks = False
    response, used = await _through_csrf(inline.CsrfViewMiddleware, request, hops)
    assert response.status_code == 403
    assert used == ["CsrfViewMiddleware.process_view"]


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
