"""The async session middleware keeps the cookie behaviour of Django's SessionMiddleware.

The scenarios are those of Django's own session middleware tests that apply here (secure,
HttpOnly, SameSite, no save on 5xx, SessionInterrupted, deleting the cookie of an emptied
session, Vary: Cookie, SESSION_SAVE_EVERY_REQUEST, expiry at browser close). Each runs through
Django's class and through ours, both in async mode, and must give the same answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import import_module

import pytest
from django.conf import settings
from django.contrib.sessions.exceptions import SessionInterrupted
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory, override_settings

from patient_data.middleware.sessions import SessionMiddleware

pytestmark = pytest.mark.django_db(transaction=True)

View = Callable[[HttpRequest], Awaitable[HttpResponse]]
MIDDLEWARES = pytest.mark.parametrize(
    "middleware", [DjangoSessionMiddleware, SessionMiddleware], ids=["django", "ours"]
)
COOKIE = settings.SESSION_COOKIE_NAME


def _view(change: Callable[[HttpRequest], Awaitable[None]] | None = None, status: int = 200):
    async def view(request: HttpRequest) -> HttpResponse:
        if change is not None:
            await change(request)
        return HttpResponse("ok", status=status)

    return view


async def _run(middleware: type, view: View, cookie: str | None = None) -> HttpResponse:
    request = RequestFactory().get("/")
    if cookie is not None:
        request.COOKIES[COOKIE] = cookie
    return await middleware(view)(request)


async def _set_foo(request: HttpRequest) -> None:
    await request.session.aset("foo", "bar")


async def _read_foo(request: HttpRequest) -> None:
    await request.session.aget("foo")


async def _flush(request: HttpRequest) -> None:
    await request.session.aflush()


async def _stored_session(data: dict) -> str:
    store = import_module(settings.SESSION_ENGINE).SessionStore()
    await store.aupdate(data)
    await store.asave()
    return store.session_key


@MIDDLEWARES
async def test_a_modified_session_is_saved_with_the_cookie_attributes(middleware):
    with override_settings(
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_EXPIRE_AT_BROWSER_CLOSE=False,  # the project's default is True: no max-age
    ):
        response = await _run(middleware, _view(_set_foo))
    cookie = response.cookies[COOKIE]
    assert cookie["secure"] is True
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Strict"
    assert cookie["max-age"] == settings.SESSION_COOKIE_AGE
    assert cookie["path"] == settings.SESSION_COOKIE_PATH
    assert response["Vary"] == "Cookie"
    store = import_module(settings.SESSION_ENGINE).SessionStore(cookie.value)
    assert await store.aget("foo") == "bar"


@MIDDLEWARES
async def test_no_httponly_when_it_is_turned_off(middleware):
    with override_settings(SESSION_COOKIE_HTTPONLY=False):
        response = await _run(middleware, _view(_set_foo))
    assert not response.cookies[COOKIE]["httponly"]


@MIDDLEWARES
@pytest.mark.parametrize("status", [500, 503])
async def test_a_5xx_response_saves_nothing(middleware, status):
    response = await _run(middleware, _view(_set_foo, status=status))
    assert COOKIE not in response.cookies


@MIDDLEWARES
async def test_a_session_deleted_during_the_request_interrupts_it(middleware):
    key = await _stored_session({"foo": "bar"})

    async def deleted_elsewhere(request: HttpRequest) -> None:
        await request.session.aget("foo")  # loaded, then a concurrent logout deletes it
        other = import_module(settings.SESSION_ENGINE).SessionStore(key)
        await other.adelete()
        await request.session.aset("foo", "baz")

    with pytest.raises(SessionInterrupted):
        await _run(middleware, _view(deleted_elsewhere), cookie=key)


@MIDDLEWARES
async def test_an_emptied_session_deletes_the_cookie(middleware):
    key = await _stored_session({"foo": "bar"})
    with override_settings(SESSION_COOKIE_DOMAIN=".example.local", SESSION_COOKIE_PATH="/portal/"):
        response = await _run(middleware, _view(_flush), cookie=key)
    cookie = response.cookies[COOKIE]
    assert cookie.value == ""
    assert cookie["max-age"] == 0
    assert cookie["expires"] == "Thu, 01 Jan 1970 00:00:00 GMT"
    assert cookie["domain"] == ".example.local"
    assert cookie["path"] == "/portal/"
    assert response["Vary"] == "Cookie"


@MIDDLEWARES
async def test_flushing_without_a_cookie_sets_none(middleware):
    response = await _run(middleware, _view(_flush))
    assert COOKIE not in response.cookies
    assert response["Vary"] == "Cookie"  # the session was accessed


@MIDDLEWARES
async def test_a_session_emptied_of_its_data_but_keeping_its_key_is_saved(middleware):
    key = await _stored_session({"foo": "bar"})

    async def emptied(request: HttpRequest) -> None:
        await request.session.apop("foo")

    response = await _run(middleware, _view(emptied), cookie=key)
    assert response.cookies[COOKIE].value == key
    store = import_module(settings.SESSION_ENGINE).SessionStore(key)
    assert list(await store.akeys()) == []


@MIDDLEWARES
async def test_an_unread_session_is_neither_loaded_nor_varied_on(middleware):
    key = await _stored_session({"foo": "bar"})
    response = await _run(middleware, _view(), cookie=key)
    assert COOKIE not in response.cookies
    assert not response.has_header("Vary")


@MIDDLEWARES
async def test_a_read_session_is_varied_on_but_not_saved(middleware):
    key = await _stored_session({"foo": "bar"})
    response = await _run(middleware, _view(_read_foo), cookie=key)
    assert COOKIE not in response.cookies
    assert response["Vary"] == "Cookie"


@MIDDLEWARES
async def test_save_every_request_saves_an_unmodified_session(middleware):
    key = await _stored_session({"foo": "bar"})
    with override_settings(SESSION_SAVE_EVERY_REQUEST=True):
        response = await _run(middleware, _view(), cookie=key)
    assert response.cookies[COOKIE].value == key
    assert response["Vary"] == "Cookie"


@MIDDLEWARES
async def test_expiry_at_browser_close_sends_a_session_cookie(middleware):
    with override_settings(SESSION_EXPIRE_AT_BROWSER_CLOSE=True):
        response = await _run(middleware, _view(_set_foo))
    cookie = response.cookies[COOKIE]
    assert cookie.value
    assert cookie["max-age"] == ""
    assert cookie["expires"] == ""


@MIDDLEWARES
async def test_a_custom_expiry_sets_the_cookie_age(middleware):
    async def short(request: HttpRequest) -> None:
        await request.session.aset("foo", "bar")
        await request.session.aset_expiry(300)

    response = await _run(middleware, _view(short))
    assert response.cookies[COOKIE]["max-age"] == 300


def _cookie_without_dates(response: HttpResponse) -> str:
    morsel = response.cookies.get(COOKIE)
    if morsel is None:
        return ""
    return "; ".join(
        f"{name}={morsel[name]}" for name in ("max-age", "path", "samesite", "httponly", "secure")
    )


@pytest.mark.parametrize(
    "change", [None, _set_foo, _read_foo, _flush], ids=["untouched", "set", "read", "flush"]
)
@pytest.mark.parametrize("with_cookie", [False, True], ids=["new", "known"])
async def test_both_middlewares_answer_alike(change, with_cookie):
    answers = []
    for middleware in (DjangoSessionMiddleware, SessionMiddleware):
        key = await _stored_session({"foo": "bar"}) if with_cookie else None
        response = await _run(middleware, _view(change), cookie=key)
        value = response.cookies[COOKIE].value if COOKIE in response.cookies else None
        answers.append(
            (
                response.get("Vary"),
                _cookie_without_dates(response),
                value == key if value else value,
            )
        )
    assert answers[0] == answers[1]


async def test_ours_hops_only_for_the_session_s_own_queries(hops):
    key = await _stored_session({"foo": "bar"})
    hops.clear()
    assert (await _run(SessionMiddleware, _view(_read_foo), cookie=key)).status_code == 200
    # The load, with what the view declared (patient_data.prefetch); Django's adds two hooks.
    assert hops == ["GuardedSessionMixin._load_with_companions"]
    hops.clear()
    assert (await _run(SessionMiddleware, _view(_set_foo), cookie=key)).status_code == 200
    assert "SessionMiddleware.process_response" not in hops


def test_the_sync_mode_is_django_s():
    def view(request: HttpRequest) -> HttpResponse:
        request.session["foo"] = "bar"
        return HttpResponse("ok")

    request = RequestFactory().get("/")
    response = SessionMiddleware(view)(request)
    assert response.cookies[COOKIE].value == request.session.session_key
