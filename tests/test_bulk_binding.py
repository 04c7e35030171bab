"""The ``db`` backend's writes with their JSON parameters (``fastjson.dumps_param``; on
PostgreSQL bound by the server): compare-and-set and compare-and-delete of sessions whose
content is non-ASCII, astral or a lone surrogate, and errors raised as Django's."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction
from django.test import override_settings

from patient_data.bulk.backends import backend_for
from patient_data.bulk.backends.db import _server_bound
from tests.bulk_support import load, make_session

pytestmark = pytest.mark.django_db(transaction=True)

NOTES = ["é ü ß", "😀 𝄞", "\u2028\u2029\x7f", "\ud800 lone", "x" * 5000]


@pytest.fixture
def engine():
    with override_settings(SESSION_ENGINE="patient_data.sessions.db"):
        from patient_data.sessions import db

        yield db


@pytest.mark.parametrize("note", NOTES)
def test_a_cleaned_session_is_written_only_over_what_was_read(engine, note):
    key = make_session(engine, note=note)
    backend = backend_for()
    stored = backend.fetch([key])[key]
    cleaned = {"note": note, "other": ["é", "😀", 2**70]}
    with transaction.atomic():
        assert backend.apply([(stored, cleaned)], []) == set()
    assert load(engine, key) == cleaned
    # The row changed since ``stored`` was read: left alone, reported back.
    with transaction.atomic():
        assert backend.apply([(stored, {"note": "stale"})], []) == {key}
        assert backend.apply([], [stored]) == {key}
    assert load(engine, key) == cleaned
    # Read again: removed.
    with transaction.atomic():
        assert backend.apply([], [backend.fetch([key])[key]]) == set()
    assert backend.fetch([key]) == {}


def test_postgresql_binds_on_the_server_and_raises_djangos_errors(engine):
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's JSON statements")
    backend = backend_for()
    with connection.cursor():
        assert _server_bound(connection) is not None
    with pytest.raises(DatabaseError), transaction.atomic():
        backend._returning_json(
            "SELECT no_such_column FROM {table} WHERE %s::json IS NOT NULL", [{"k": "x"}], []
        )
