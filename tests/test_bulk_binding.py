"""The ``db`` backend's writes (on PostgreSQL their rows bound by the server as binary arrays,
``patient_data.server_binding``): compare-and-set and compare-and-delete of sessions whose
content is non-ASCII, astral or a lone surrogate, and errors raised as Django's."""

from __future__ import annotations

import psycopg
import pytest
from django.db import DatabaseError, connection, transaction
from django.test import override_settings

from patient_data import audit
from patient_data.bulk.backends import backend_for
from patient_data.cleanup import Cleanup
from patient_data.models import CleanupEvent
from patient_data.server_binding import array_cursor
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
        pytest.skip("PostgreSQL's binary arrays")
    backend = backend_for()
    with array_cursor(connection) as (cursor, array):
        assert array == "%b"
        assert type(cursor).__module__.startswith("psycopg")
    with pytest.raises(DatabaseError), transaction.atomic():
        backend._returning_arrays(
            "SELECT no_such_column FROM {table} WHERE {array}::text[] IS NOT NULL", [["x"]], []
        )


def test_postgresql_gets_the_rows_as_binary_arrays_not_json(engine, monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's binary arrays")
    sent = []
    execute = psycopg.Cursor.execute

    def spy(self, query, params=None, **kwargs):
        sent.append((str(query), params))
        return execute(self, query, params, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", spy)
    keys = [make_session(engine, note=note) for note in NOTES[:2]]
    backend = backend_for()
    stored = backend.fetch(keys)
    cleanup = Cleanup("clear_patient_data", "bulk_cleanup", "command", 1, ("patient_cda_*",), "a")
    with transaction.atomic():
        assert backend.apply([(stored[keys[0]], {"note": "clean"})], [stored[keys[1]]]) == set()
        assert audit.record_many([cleanup, cleanup]) == 2
    bulk = [(query, params) for query, params in sent if "unnest" in query or "_to_record" in query]
    assert [query.split()[0] for query, _ in bulk] == ["UPDATE", "DELETE", "INSERT"]
    for query, params in bulk:
        assert "recordset" not in query
        assert query.count("%b") == sum(isinstance(param, list) for param in params) >= 3
    assert load(engine, keys[0]) == {"note": "clean"}
    assert (
        list(CleanupEvent.objects.values_list("keys", "actor_id"))
        == [(["patient_cda_*"], None)] * 2
    )
