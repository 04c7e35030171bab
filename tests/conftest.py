"""Shared fixtures: users, and a driver that runs one scenario through the sync ``Client``
and through the async ``AsyncClient`` (the ASGI handler, Django's async session/auth API)."""

from __future__ import annotations

import asyncio
from importlib import import_module
from io import StringIO

import pytest
from asgiref.sync import SyncToAsync, async_to_sync, sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.commands import flush
from django.db import connections
from django.db.backends.utils import CursorWrapper
from django.test import AsyncClient, Client, RequestFactory

from patient_data import append_only, epoch
from patient_data.models import DemoPatient
from patient_data.registry import META_KEY


@pytest.fixture(scope="session", autouse=True)
def _close_worker_thread_connections(django_db_setup):
    """Async ORM calls run in asgiref's worker thread, whose connection Django never closes;
    close it before the test database is dropped (PostgreSQL refuses while it is open)."""
    yield
    asyncio.run(sync_to_async(connections.close_all)())


@pytest.fixture(scope="session", autouse=True)
def _audit_rows_go_with_the_test_database():
    """Transactional tests end with ``flush``; the audit table's triggers refuse it unless the
    transaction unlocked it. The suite's teardown is the one caller allowed to."""
    original = flush.Command.handle

    def handle(self, **options):
        with append_only.unlocked(options["database"]):
            return original(self, **options)

    flush.Command.handle = handle
    yield
    flush.Command.handle = original


@pytest.fixture(autouse=True)
def _fresh_epoch_cache():
    epoch.forget()
    yield
    epoch.forget()


def sign_in_request():
    """The request ``authenticate``/``client.login`` must be given: the brute-force protection
    (django-axes) counts attempts per client address and refuses to authenticate without one."""
    return RequestFactory().post(settings.LOGIN_URL)


@pytest.fixture
def clinician(db):
    return get_user_model().objects.create_user("clinician", password="synthetic-pass-1")


class Driver:
    """One interface over ``Client`` and ``AsyncClient``; ``kind`` says which runs."""

    def __init__(self, kind: str, **client_kwargs):
        self.kind = kind
        self.client = Client(**client_kwargs) if kind == "sync" else AsyncClient(**client_kwargs)

    @classmethod
    def at(cls, kind: str, address: str) -> Driver:
        """A client whose requests come from ``address`` (REMOTE_ADDR)."""
        if kind == "sync":
            return cls(kind, REMOTE_ADDR=address)
        browser = cls(kind)
        request = browser.client.request

        async def from_address(**scope):  # AsyncClient turns its extras into headers
            return await request(**scope, client=[address, 1])

        browser.client.request = from_address
        return browser

    def _call(self, method: str, path: str, **kwargs):
        call = getattr(self.client, method)
        if self.kind == "sync":
            return call(path, **kwargs)
        return async_to_sync(call)(path, **kwargs)

    def get(self, path: str, **kwargs):
        return self._call("get", path, **kwargs)

    def post(self, path: str, **kwargs):
        return self._call("post", path, **kwargs)

    def force_login(self, user) -> None:
        self.client.force_login(user)

    @property
    def session_key(self) -> str | None:
        cookie = self.client.cookies.get(settings.SESSION_COOKIE_NAME)
        return cookie.value if cookie else None

    def stored(self) -> dict:
        """The session as stored server-side now (a fresh load, not a cached copy)."""
        store = import_module(settings.SESSION_ENGINE).SessionStore(self.session_key)
        return dict(store.load())

    def rewrite(self, **meta_changes) -> None:
        """Change the stored bookkeeping (e.g. move ``seen`` into the past)."""
        store = import_module(settings.SESSION_ENGINE).SessionStore(self.session_key)
        data = store.load()
        store._session_cache = data
        data[META_KEY] = {**data.get(META_KEY, {}), **meta_changes}
        store.modified = True
        store.save()


def browser_with_patient_data(user, kind: str = "sync", **client_kwargs) -> Driver:
    """A logged-in client whose session holds the three test patient items."""
    browser = Driver(kind, **client_kwargs)
    browser.force_login(user)
    assert browser.get("/_test/store/").status_code == 200
    return browser


@pytest.fixture(params=["sync", "async"])
def driver(request, db) -> Driver:
    return Driver(request.param)


@pytest.fixture
def logged_in(driver, clinician) -> Driver:
    driver.force_login(clinician)
    return driver


@pytest.fixture
def with_patient_data(logged_in) -> Driver:
    response = logged_in.get("/_test/store/")
    assert response.status_code == 200
    return logged_in


@pytest.fixture
def hops(monkeypatch) -> list[str]:
    """The name of every function run through ``sync_to_async`` (a thread hop) from now on."""
    names: list[str] = []
    original = SyncToAsync.__call__

    async def counting(self, *args, **kwargs):
        func = getattr(self.func, "__func__", self.func)
        names.append(getattr(func, "__qualname__", type(func).__name__))
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(SyncToAsync, "__call__", counting)
    return names


# A steady patient page of the demo portal (tests/test_request_hops.py, test_prefetch.py).

DEMO_PASSWORD = "hops-test-password-41"


@pytest.fixture
def queries(monkeypatch) -> list[str]:
    """The table of every query run from now on, in any thread."""
    tables: list[str] = []
    original = CursorWrapper._execute

    def recording(self, sql, *args):
        tables.append(sql.split(" FROM ", 1)[1].split()[0] if " FROM " in sql else sql)
        return original(self, sql, *args)

    monkeypatch.setattr(CursorWrapper, "_execute", recording)
    return tables


@pytest.fixture
def patient() -> DemoPatient:
    call_command(
        "seed_demo",
        patients=3,
        password=DEMO_PASSWORD,
        staff_password=DEMO_PASSWORD,
        stdout=StringIO(),
    )
    return DemoPatient.objects.order_by("patient_id").first()


async def steady_client(patient: DemoPatient) -> tuple[AsyncClient, str]:
    """A clinician who searched and opened ``patient`` twice: nothing left to write."""
    client = AsyncClient()
    assert await client.alogin(
        request=sign_in_request(), username="clinician", password=DEMO_PASSWORD
    )
    await client.post("/patients/", {"patient_id": patient.patient_id})
    results = await (await client.asession()).aget("patient_search_results")
    url = f"/patients/{results[0]['ref']}/"
    for _ in range(2):
        assert (await client.get(url)).status_code == 200
    return client, url
