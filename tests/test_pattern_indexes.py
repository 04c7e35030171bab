"""Migration 0008: the generation rows and the audit trail keep their btree indexes and no
``varchar_pattern_ops`` copy of them on PostgreSQL (every cleanup would write to it, no query
reads it); lookups by ref and session ref still go through an index."""

from __future__ import annotations

import pytest
from django.db import connection

from patient_data.models import CleanupEvent, PatientSessionState

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's _like indexes"),
]

TABLES = [PatientSessionState._meta.db_table, CleanupEvent._meta.db_table]


def _indexes(table: str) -> dict[str, str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s", [table])
        return dict(cursor.fetchall())


@pytest.mark.parametrize("table", TABLES)
def test_no_pattern_index_is_kept_up_to_date_for_nothing(table):
    found = _indexes(table)
    assert found
    assert [name for name, text in found.items() if "pattern_ops" in text] == []


@pytest.mark.parametrize(
    ("table", "column"),
    [(TABLES[0], "ref"), (TABLES[0], "session_ref"), (TABLES[1], "session_ref")],
)
def test_ref_lookups_keep_their_btree_index(table, column):
    found = _indexes(table).values()
    assert any(text.endswith(f"USING btree ({column})") for text in found), found
