"""The database engines read the session row with a statement of their own, not the ORM's
``get`` (``patient_data.sessions.db.RowRead``): the same rows, values and outcomes as Django's
read, in one query of the two columns a load needs."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.sessions.backends.db import SessionStore as DjangoStore
from django.contrib.sessions.models import Session
from django.core.cache import caches
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from patient_data.sessions import cached_db, db
from tests.engine_support import LOCMEM

pytestmark = pytest.mark.django_db


def _stored(expires_in: timedelta) -> str:
    session = db.SessionStore()
    session["note"] = "kept"
    session.create()
    Session.objects.filter(pk=session.session_key).update(expire_date=timezone.now() + expires_in)
    return session.session_key


def _django_read(key: str | None):
    store = DjangoStore(key)
    return store._get_session_from_db(), store.session_key


@pytest.mark.parametrize(
    "case", ["live", "expired", "missing", "no key"], ids=lambda case: case.replace(" ", "_")
)
def test_the_read_finds_what_the_orm_finds(case):
    key = {
        "live": lambda: _stored(timedelta(hours=1)),
        "expired": lambda: _stored(-timedelta(seconds=1)),
        "missing": lambda: "x" * 32,
        "no key": lambda: None,
    }[case]()
    expected, expected_key = _django_read(key)
    store = db.SessionStore(key)
    found = store._get_session_from_db()
    assert store.session_key == expected_key  # reset to None when there is no live row
    if expected is None:
        assert found is None
        return
    assert (found.pk, found.session_data, found.expire_date) == (
        expected.pk,
        expected.session_data,
        expected.expire_date,
    )
    assert found._state.db == expected._state.db
    assert store.load() == {"note": "kept"}


def test_a_load_is_one_query_of_the_data_and_the_expiry():
    key = _stored(timedelta(hours=1))
    with CaptureQueriesContext(connection) as queries:
        assert db.SessionStore(key).load() == {"note": "kept"}
    assert len(queries) == 1
    selected = queries[0]["sql"].split(" FROM ")[0]
    assert "session_data" in selected and "expire_date" in selected
    assert "session_key" not in selected  # the ORM's get selects every column


def test_cached_db_fills_its_cache_from_that_one_query():
    """``cached_db`` reads the row's expiry for the cache entry: no second query for it."""
    key = _stored(timedelta(hours=1))
    with override_settings(CACHES=LOCMEM):
        try:
            with CaptureQueriesContext(connection) as queries:
                assert cached_db.SessionStore(key).load() == {"note": "kept"}
            assert len(queries) == 1
            with CaptureQueriesContext(connection) as queries:
                assert cached_db.SessionStore(key).load() == {"note": "kept"}
            assert len(queries) == 0  # from the cache, for the row's remaining lifetime
        finally:
            caches["default"].clear()


@pytest.mark.django_db(transaction=True)
async def test_the_async_read_is_the_same_read():
    from asgiref.sync import sync_to_async

    key = await sync_to_async(_stored)(timedelta(hours=1))
    store = db.SessionStore(key)
    found = await store._aget_session_from_db()
    assert found.session_data == (await sync_to_async(_django_read)(key))[0].session_data
    assert await store.aload() == {"note": "kept"}
