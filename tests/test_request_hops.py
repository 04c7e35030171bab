"""Thread hops and queries of a steady-state patient page, on the full middleware stack.

Steady state: the clinician's session is loaded, the patient's data is already in it, and no
activity write is due. What is left are the hops Django's handler makes itself (the
``request_started`` signal, closing the response) and one for the session row, the user row
(``patient_data.middleware.auth``) and the view's patient row (``patient_data.prefetch``)
together.
"""

from __future__ import annotations

from importlib import import_module
from urllib.parse import urlencode

import pytest
from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.contrib.auth.models import User
from django.test import AsyncClient, Client, RequestFactory, override_settings

from bench.settings_stock import MIDDLEWARE as DJANGO_STACK
from bench.settings_without_patient_middleware import MIDDLEWARE as WITHOUT_PATIENT_MIDDLEWARE
from patient_data.middleware.auth import EARLY_ATTR, AuthenticationMiddleware
from patient_data.middleware.patient_session_security import CLEARED_HEADER
from patient_data.models import CleanupEvent, DemoPatient
from tests.conftest import DEMO_PASSWORD as PASSWORD
from tests.conftest import sign_in_request, steady_client
from tests.engine_support import engine_fixture, engine_name  # noqa: F401 - the engine fixture

pytestmark = pytest.mark.django_db(transaction=True)

HANDLER_HOPS = ["Signal.asend.<locals>.sync_send", "HttpResponseBase.close"]
USER_HOP = "QuerySet.get"
PATIENT_HOP = "_find_patient"
SESSION_AND_USER_HOP = "GuardedSessionMixin._load_with_companions"


@pytest.fixture(autouse=True)
def no_activity_write_due(settings):
    """Steady state however slow the machine: no activity write falls due between requests
    (an extra hop and query that a loaded CI machine otherwise sometimes saw), and the
    process's copy of the epoch does not expire between them (an extra epoch query)."""
    settings.PATIENT_ACTIVITY_WRITE_INTERVAL = 3600
    settings.PATIENT_EPOCH_CACHE_SECONDS = 3600


async def _page(client: AsyncClient, url: str, queries: list[str]) -> tuple[list[str], object]:
    queries.clear()
    response = await client.get(url)
    assert response.status_code == 200
    return list(queries), response


async def test_a_steady_patient_page_hops_only_for_the_handler_and_its_queries(
    patient, hops, queries
):
    client, url = await steady_client(patient)
    hops.clear()
    tables, response = await _page(client, url, queries)
    assert response["X-Patient-Data-Page"] == "true"
    assert settings.SESSION_COOKIE_NAME not in response.cookies  # nothing was saved
    assert tables == ['"django_session"', '"auth_user"', '"patient_data_demopatient"']
    # The session row, the user row and the view's patient in one hop.
    assert hops == [HANDLER_HOPS[0], SESSION_AND_USER_HOP, HANDLER_HOPS[1]]


async def test_django_s_own_middleware_classes_hop_for_every_hook(patient, hops, queries):
    with override_settings(MIDDLEWARE=DJANGO_STACK):
        client, url = await steady_client(patient)
        hops.clear()
        tables, _ = await _page(client, url, queries)
    assert len(tables) == 3
    middleware_hops = [name for name in hops if name.endswith(("_request", "_response", "_view"))]
    assert (
        len(middleware_hops) == 13
    )  # 6 x process_request, CSRF's process_view, 6 x process_response
    assert len(hops) == 5 + 13  # with the handler's 2, the session, the user, the patient


async def test_the_patient_middlewares_add_no_query_and_no_hop(patient, hops, queries):
    client, url = await steady_client(patient)
    hops.clear()
    with_them, _ = await _page(client, url, queries)
    hops_with_them = list(hops)
    with override_settings(MIDDLEWARE=WITHOUT_PATIENT_MIDDLEWARE):
        bare = AsyncClient()  # a client builds its middleware chain once
        bare.cookies = client.cookies
        hops.clear()
        without_them, response = await _page(bare, url, queries)
    assert "X-Patient-Data-Page" not in response
    assert with_them == without_them
    assert hops == hops_with_them


async def test_a_form_post_is_checked_by_csrf_without_a_hop(patient, hops):
    """A browser's form (urlencoded, in memory) is parsed and checked in the loop; only a
    refusal's failure view, or a multipart body, would hop (tests/test_inline_middleware.py)."""
    client, _ = await steady_client(patient)
    client.cookies[settings.CSRF_COOKIE_NAME] = secret = "s" * 32
    hops.clear()
    response = await client.post(
        "/patients/",
        urlencode({"patient_id": patient.patient_id, "csrfmiddlewaretoken": secret}),
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 302
    assert not [hop for hop in hops if hop.startswith("CsrfViewMiddleware.")]


def test_the_sync_stack_reads_the_user_once(patient, queries):
    """The middleware asks ``request.user``, the async view's login check ``auser()``."""
    client = Client()
    assert client.login(request=sign_in_request(), username="clinician", password=PASSWORD)
    client.post("/patients/", {"patient_id": patient.patient_id})
    url = f"/patients/{client.session['patient_search_results'][0]['ref']}/"
    client.get(url)
    queries.clear()
    assert client.get(url).status_code == 200
    assert queries.count('"auth_user"') == 1


async def test_a_sync_view_after_the_async_middleware_reuses_the_user(patient, queries):
    client, _ = await steady_client(patient)
    queries.clear()
    response = await client.get("/_test/whoami/")
    assert response.json() == {"authenticated": True}
    assert queries.count('"auth_user"') == 1


def test_the_settings_use_the_hop_free_stack():
    assert "patient_data.middleware.sessions.SessionMiddleware" in settings.MIDDLEWARE
    assert not [path for path in settings.MIDDLEWARE if path.startswith("django.")]


# The user read in the session's hop answers as Django's own call would, side effects included.


async def _events() -> list[tuple[str, str, str]]:
    return [(e.action, e.reason, e.source) async for e in CleanupEvent.objects.order_by("pk")]


async def _after(change, patient: DemoPatient, middleware: list[str] | None) -> tuple:
    """What a steady patient page answers after ``change``, under ``middleware`` (the
    project's when None): status, redirect, cleared reason, cookie sent, cleanup events."""
    with override_settings(MIDDLEWARE=middleware or settings.MIDDLEWARE):
        client, url = await steady_client(patient)
        before = await _events()
        await change()
        response = await client.get(url)
        events = (await _events())[len(before) :]
    cookie = response.cookies.get(settings.SESSION_COOKIE_NAME)
    return (
        response.status_code,
        response.get("Location", "").split("?")[0],  # the next= ref is random per search
        response.get(CLEARED_HEADER),
        cookie is not None and bool(cookie.value),
        events,
    )


async def _password_changed_elsewhere() -> None:
    user = await User.objects.aget(username="clinician")
    user.set_password("changed-elsewhere-77")
    await user.asave()


async def _deactivated() -> None:
    await User.objects.filter(username="clinician").aupdate(is_active=False)


@pytest.mark.parametrize("change", [_password_changed_elsewhere, _deactivated])
async def test_the_early_user_answers_as_django_s_own_call(patient, change):
    ours = await _after(change, patient, None)
    user = await User.objects.aget(username="clinician")
    user.set_password(PASSWORD)
    user.is_active = True
    await user.asave()
    stock = await _after(change, patient, DJANGO_STACK)
    assert ours == stock
    assert ours[0] == 302  # logged out, to the login page


async def test_a_rotated_secret_still_cycles_the_session_key(patient):
    """A hash made with a fallback secret: Django cycles the key and re-stamps the hash."""
    client, url = await steady_client(patient)
    old_key = client.cookies[settings.SESSION_COOKIE_NAME].value
    with override_settings(
        SECRET_KEY=f"rotated-{settings.SECRET_KEY}", SECRET_KEY_FALLBACKS=[settings.SECRET_KEY]
    ):
        response = await client.get(url)
        assert response.status_code == 200
        new_key = response.cookies[settings.SESSION_COOKIE_NAME].value
        assert new_key != old_key
        assert (await client.get(url)).status_code == 200


async def test_the_early_user_is_not_used_once_the_session_names_another(patient):
    client, _ = await steady_client(patient)
    other = await User.objects.acreate_user("other-clinician", password=PASSWORD)
    request = RequestFactory().get("/")
    request.session = import_module(settings.SESSION_ENGINE).SessionStore(
        client.cookies[settings.SESSION_COOKIE_NAME].value
    )
    AuthenticationMiddleware(lambda r: None).process_request(request)
    await request.session.aset(SESSION_KEY, str(other.pk))  # the load read the clinician
    assert getattr(request, EARLY_ATTR)[1].username == "clinician"
    user = await request.auser()
    assert not user.is_authenticated  # Django: the clinician's hash does not verify -> flush
    assert await request.session.aget(SESSION_KEY) is None


async def test_every_engine_whose_load_hops_reads_the_user_in_that_hop(engine, patient, hops):
    """``db``, ``cache``, ``cached_db``: the user and the patient ride the session's hop.
    ``file`` and ``signed_cookies`` load in the loop (Django's ``aload``): each keeps its own."""
    client, url = await steady_client(patient)
    hops.clear()
    assert (await client.get(url)).status_code == 200
    shared = engine_name(engine) in {"db", "cache", "cached_db"}
    assert hops.count(SESSION_AND_USER_HOP) == (1 if shared else 0)
    assert hops.count(USER_HOP) == (0 if shared else 1)
    assert hops.count(PATIENT_HOP) == (0 if shared else 1)
