"""``db`` and ``cached_db`` sessions: rows of the session model.

Pages are read by key range (no long-lived cursor, constant memory) with one plain SQL
statement each: every row of the table goes through here, so no model machinery per row, and
the expiry date is compared by the database (``expire_date <= now``, as ``clearsessions``
does) instead of being parsed into a datetime per row. Writes compare and set
``session_data`` in the statement itself, so a row a request changed since it was read is left
alone and reported back. On PostgreSQL one ``UPDATE ... FROM ... RETURNING`` (and one
``DELETE ... RETURNING``) per chunk, joined to the chunk's rows sent as binary arrays bound by
the server (``unnest``, ``patient_data.server_binding``). On SQLite >= 3.35 one prepared
UPDATE run with ``executemany`` (its total row count says whether a row changed meanwhile) and
one ``DELETE ... RETURNING`` joined to a VALUES list per chunk. Other databases are refused
(system check E011).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from django.conf import settings
from django.core.cache import caches
from django.db import connections, router, transaction
from django.utils import timezone

from patient_data.bulk.backends.base import Backend, Stored, UnsupportedBackend
from patient_data.server_binding import array_cursor

CHUNK = 500
#: PostgreSQL: blocks of the session table sampled to cut it into key ranges (``boundaries``).
SAMPLE_BLOCKS = 1000
#: Sampled keys per key range at least; fewer: the boundaries are read from the key index.
KEYS_PER_RANGE = 100


class DatabaseBackend(Backend):
    name = "db"

    def __init__(self, engine: str, store_class: type) -> None:
        super().__init__(engine, store_class)
        self.model = store_class.get_model_class()
        self.using = router.db_for_write(self.model)
        # Decided once, before anything is read (an unsupported database is refused here).
        self.form = self._form()
        quote = connections[self.using].ops.quote_name
        #: Quoted table and column names for the statements below.
        self.names = {
            "table": quote(self.model._meta.db_table),
            "key": quote("session_key"),
            "data": quote("session_data"),
            "expires": quote("expire_date"),
        }

    def describe(self) -> str:
        connection = connections[self.using]
        name = connection.settings_dict["NAME"]
        return f"{super().describe()}, {connection.vendor} database {name!s}"

    def count(self) -> int:
        return self.model._default_manager.using(self.using).count()

    def _select(self, where: str, params: list, tail: str = "") -> list[Stored]:
        """Rows matching ``where`` as ``Stored``, expiry judged by the database at ``now``."""
        connection = connections[self.using]
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        select = "SELECT {key}, {data}, {expires} <= %s FROM {table} WHERE ".format(**self.names)  # noqa: S608 - names from the model, values bound
        sql = select + where + tail
        with connection.cursor() as cursor:
            cursor.execute(sql, [now, *params])
            rows = cursor.fetchall()
        return [Stored(session_key, raw, bool(expired)) for session_key, raw, expired in rows]

    def pages(self, size: int, after: str = "", upto: str | None = None) -> Iterator[list[Stored]]:
        """Every row, or those of the key range (``after``, ``upto``] (``upto`` None: no
        end), ``size`` at a time in key order."""
        key = self.names["key"]
        last = after  # session keys are non-empty: "" is before all of them
        end, bound = ("", []) if upto is None else (f" AND {key} <= %s", [upto])
        while True:
            page = self._select(
                f"{key} > %s{end}", [last, *bound], f" ORDER BY {key} LIMIT {int(size)}"
            )
            if not page:
                return
            yield page
            last = page[-1].key

    def boundaries(self, every: int) -> list[str]:
        """Keys cutting the table into ranges of about ``every`` rows, in the table's key
        order: the ranges between them (the first open at the bottom, the last at the top)
        cover every key exactly once whatever the keys are, the database comparing them.

        On PostgreSQL cut at quantiles of a sample of the table's blocks (``_sampled``),
        elsewhere, or when the sample is too small, at every ``every``-th key (``_exact``).
        """
        if self.form == "arrays":
            sampled = self._sampled(every)
            if sampled is not None:
                return sampled
        return self._exact(every)

    def _sampled(self, every: int) -> list[str] | None:
        """PostgreSQL: about ``SAMPLE_BLOCKS`` blocks of the table read at random
        (``TABLESAMPLE SYSTEM``), their keys sorted by the database, one boundary every
        ``KEYS_PER_RANGE`` or more of them; None when they give fewer than two ranges.

        Every ``every``-th key read from the key index costs a read of the whole index (and of
        the rows whose visibility it does not know): seconds at a million rows. The sample
        reads a thousand blocks; its ranges are as many as the table's estimated rows call
        for, equal within the sample's error, which the queue of ranges evens out.
        """
        connection = connections[self.using]
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_relation_size(%s::regclass) / current_setting('block_size')::int",
                [self.names["table"]],
            )
            (blocks,) = cursor.fetchone()
            if not blocks:
                return None
            percent = min(100.0, 100.0 * SAMPLE_BLOCKS / blocks)
            sql = "SELECT {key} FROM {table} TABLESAMPLE SYSTEM (%s) ORDER BY {key}".format(  # noqa: S608 - names from the model, values bound
                **self.names
            )
            cursor.execute(sql, [percent])
            keys = [key for (key,) in cursor.fetchall()]
        estimated = len(keys) * 100.0 / percent
        ranges = min(math.ceil(estimated / every), len(keys) // KEYS_PER_RANGE)
        if ranges < 2:
            return None
        step = len(keys) / ranges
        return [keys[int(step * index)] for index in range(1, ranges)]

    def _exact(self, every: int) -> list[str]:
        """Every ``every``-th key in the table's key order, read from the key index."""
        connection = connections[self.using]
        sql = "SELECT {key} FROM {table} WHERE {key} > %s ORDER BY {key} LIMIT 1 OFFSET %s".format(  # noqa: S608 - names from the model, values bound
            **self.names
        )
        found: list[str] = []
        with connection.cursor() as cursor:
            while True:
                cursor.execute(sql, [found[-1] if found else "", int(every) - 1])
                row = cursor.fetchone()
                if row is None:
                    return found
                found.append(row[0])

    def fetch(self, keys: list[str]) -> dict[str, Stored]:
        key = self.names["key"]
        found = {}
        for start in range(0, len(keys), CHUNK):
            chunk = keys[start : start + CHUNK]
            marks = ", ".join(["%s"] * len(chunk))
            found.update(
                (stored.key, stored) for stored in self._select(f"{key} IN ({marks})", chunk)
            )
        return found

    def apply(self, updates: list[tuple[Stored, dict]], deletes: list[Stored]) -> set[str]:
        writes = [(stored.key, stored.raw, self.encode(data)) for stored, data in updates]
        # Inside the sweep's transaction: no savepoint of its own (a round trip each time;
        # an error rolls the whole page back and the sweep retries it session by session).
        with transaction.atomic(using=self.using, savepoint=False):
            written = self._update(writes)
            removed = self._delete(deletes)
            self.written(sorted(written | removed))
        planned = {key for key, _, _ in writes} | {stored.key for stored in deletes}
        return planned - written - removed

    def _form(self) -> str:
        """``arrays`` (PostgreSQL) or ``sqlite`` (SQLite >= 3.35, which has RETURNING); system
        check E011 refuses other databases at start-up."""
        connection = connections[self.using]
        if connection.vendor == "postgresql":
            return "arrays"
        if connection.vendor == "sqlite" and connection.Database.sqlite_version_info >= (3, 35):
            return "sqlite"
        raise UnsupportedBackend(
            f"Database {self.using!r} ({connection.vendor}) cannot be swept: the bulk cleanup "
            "needs PostgreSQL or SQLite >= 3.35 (see system check patient_data.E011)."
        )

    def _update(self, writes: list[tuple[str, str, str]]) -> set[str]:
        """Compare-and-set: a row is written only if it still holds what was read."""
        if not writes:
            return set()
        if self.form == "arrays":
            return self._returning_arrays(
                "UPDATE {table} AS s SET {data} = v.new "
                "FROM unnest({array}::text[], {array}::text[], {array}::text[]) AS v(k, old, new) "
                "WHERE s.{key} = v.k AND s.{data} = v.old RETURNING s.{key}",
                [list(column) for column in zip(*writes, strict=True)],
                [],
            )
        table, key, data = (self.names[name] for name in ("table", "key", "data"))
        # SQLite: one prepared statement stepped per row in C, faster here than joining a
        # VALUES list (which SQLite materialises first); the row count is the total.
        with connections[self.using].cursor() as cursor:
            cursor.executemany(
                f"UPDATE {table} SET {data} = %s WHERE {key} = %s AND {data} = %s",  # noqa: S608
                [(new, k, old) for k, old, new in writes],
            )
            if cursor.rowcount == len(writes):
                return {k for k, _, _ in writes}
        # Some rows changed under us: the ones holding our new content are the written ones.
        current = self.fetch([k for k, _, _ in writes])
        return {k for k, _, new in writes if k in current and current[k].raw == new}

    def _returning(self, template: str, rows: list[tuple], extra: list) -> set[str]:
        """SQLite: one statement per chunk of rows joined to a VALUES list (``extra`` bound
        after them); the keys it really changed come back with RETURNING (a row changed
        under us does not match)."""
        connection = connections[self.using]
        width = len(rows[0])
        limit = (connection.features.max_query_params or CHUNK * width) - len(extra)
        size = max(1, min(CHUNK, limit // width))
        done: set[str] = set()
        with connection.cursor() as cursor:
            for start in range(0, len(rows), size):
                chunk = rows[start : start + size]
                values = ", ".join(["(" + ", ".join(["%s"] * width) + ")"] * len(chunk))
                sql = template.format(values=values, **self.names)
                cursor.execute(sql, [value for row in chunk for value in row] + extra)
                done.update(found for (found,) in cursor.fetchall())
        return done

    def _returning_arrays(self, template: str, columns: list[list], extra: list) -> set[str]:
        """PostgreSQL: one statement per chunk, its rows one array per column (``{array}`` in
        ``template``), bound by the server in binary (``patient_data.server_binding``), then
        ``extra``. The statement text stays short and constant: nothing is quoted into it on
        the client nor parsed out of JSON on the server. No statement is prepared (the
        connection's ``prepare_threshold``, None by Django's default, stays in force)."""
        done: set[str] = set()
        with array_cursor(connections[self.using]) as (cursor, array):
            sql = template.format(array=array, **self.names)
            for start in range(0, len(columns[0]), CHUNK):
                cursor.execute(sql, [column[start : start + CHUNK] for column in columns] + extra)
                done.update(found for (found,) in cursor.fetchall())
        return done

    def _delete(self, deletes: list[Stored]) -> set[str]:
        """Compare-and-delete; a session read as expired must also still be expired (a
        request may have given the same content a new expiry date meanwhile)."""
        if not deletes:
            return set()
        now = connections[self.using].ops.adapt_datetimefield_value(timezone.now())
        if self.form == "arrays":
            return self._returning_arrays(
                "DELETE FROM {table} AS s "
                "USING unnest({array}::text[], {array}::text[], {array}::boolean[]) "
                "AS v(k, old, expired) WHERE s.{key} = v.k AND s.{data} = v.old "
                "AND (NOT v.expired OR s.{expires} <= %s) RETURNING s.{key}",
                [
                    [s.key for s in deletes],
                    [s.raw for s in deletes],
                    [bool(s.expired) for s in deletes],
                ],
                [now],
            )
        # A row-value IN list would scan the table; join through the key index instead.
        return self._returning(
            "DELETE FROM {table} WHERE rowid IN (SELECT s.rowid FROM (VALUES {values}) "
            "AS v CROSS JOIN {table} AS s ON s.{key} = v.column1 AND s.{data} = v.column2 "
            "AND (v.column3 = 0 OR s.{expires} <= %s)) RETURNING {key}",
            [(s.key, s.raw, int(bool(s.expired))) for s in deletes],
            [now],
        )

    def written(self, keys: list[str]) -> None:
        """Called inside the write transaction with the keys just changed or removed."""


class CachedDatabaseBackend(DatabaseBackend):
    """The rows are the truth; the cache copy of each changed session is deleted after commit."""

    name = "cached_db"

    def written(self, keys: list[str]) -> None:
        if not keys:
            return
        cache = caches[settings.SESSION_CACHE_ALIAS]
        cache_keys = [self.store_class.cache_key_prefix + key for key in keys]
        transaction.on_commit(lambda: cache.delete_many(cache_keys), using=self.using)
