"""Bulk statements whose rows PostgreSQL binds itself, as binary arrays.

The bulk writers (compare-and-set of a chunk of sessions, its audit rows) send hundreds of
rows per statement, one array per column joined with ``unnest``. Django's cursor binds on the
client: it would quote every value into the statement text, which the server then lexes
character by character. Here they go on a psycopg ``Cursor`` over Django's connection (in its
transaction, its errors raised as Django's) as binary parameters (``%b``): the driver writes
lengths and bytes, the server reads them without escaping or parsing. The JSON parameters
this replaced (``json_to_recordset``) spent about half of a compare-and-set chunk's time in
the server's JSON parser (docs/benchmarks.md, "Bulk cleanup").
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

try:
    import psycopg
except ImportError:  # pragma: no cover - psycopg 3 is a requirement
    psycopg = None


@contextmanager
def array_cursor(connection) -> Iterator[tuple[Any, str]]:
    """A cursor on Django's ``connection`` and the placeholder of an array parameter:
    ``%b`` on a psycopg 3 connection (bound by the server, binary), else Django's own cursor
    and ``%s``."""
    with connection.cursor() as cursor:
        raw = connection.connection
        if psycopg is None or not isinstance(raw, psycopg.Connection):
            yield cursor, "%s"
            return
        with psycopg.Cursor(raw) as bound, connection.wrap_database_errors:
            yield bound, "%b"
