"""``db`` and ``cached_db`` sessions: rows of the session model.

Pages are read by key range (no long-lived cursor, constant memory). Writes compare and set
``session_data`` in the statement itself, so a row a request changed since it was read is left
alone and reported back: on PostgreSQL one ``UPDATE ... FROM (VALUES ...) RETURNING`` per
chunk, on SQLite ``UPDATE ... WHERE session_key = %s AND session_data = %s`` with
``executemany`` in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterator

from django.conf import settings
from django.core.cache import caches
from django.db import connections, router, transaction

from patient_data.bulk.backends.base import Backend, Stored

CHUNK = 500


class DatabaseBackend(Backend):
    name = "db"

    def __init__(self, engine: str, store_class: type) -> None:
        super().__init__(engine, store_class)
        self.model = store_class.get_model_class()
        self.using = router.db_for_write(self.model)

    def describe(self) -> str:
        connection = connections[self.using]
        name = connection.settings_dict["NAME"]
        return f"{super().describe()}, {connection.vendor} database {name!s}"

    def _rows(self):
        return self.model._default_manager.using(self.using).values_list(
            "session_key", "session_data", "expire_date"
        )

    def count(self) -> int:
        return self.model._default_manager.using(self.using).count()

    def pages(self, size: int) -> Iterator[list[Stored]]:
        rows = self._rows().order_by("session_key")
        last = None
        while True:
            query = rows if last is None else rows.filter(session_key__gt=last)
            page = [Stored(key, raw, expires) for key, raw, expires in query[:size]]
            if not page:
                return
            yield page
            last = page[-1].key

    def fetch(self, keys: list[str]) -> dict[str, Stored]:
        found = {}
        for start in range(0, len(keys), CHUNK):
            query = self._rows().filter(session_key__in=keys[start : start + CHUNK])
            found.update((key, Stored(key, raw, expires)) for key, raw, expires in query)
        return found

    def apply(self, updates: list[tuple[Stored, dict]], deletes: list[Stored]) -> set[str]:
        writes = [(stored.key, stored.raw, self.encode(data)) for stored, data in updates]
        with transaction.atomic(using=self.using):
            written = self._update(writes)
            removed = self._delete(deletes)
            self.written(sorted(written | removed))
        planned = {key for key, _, _ in writes} | {stored.key for stored in deletes}
        return planned - written - removed

    def _sql(self) -> tuple[str, str, str]:
        quote = connections[self.using].ops.quote_name
        return quote(self.model._meta.db_table), quote("session_key"), quote("session_data")

    def _update(self, writes: list[tuple[str, str, str]]) -> set[str]:
        """Compare-and-set: a row is written only if it still holds what was read."""
        if not writes:
            return set()
        if connections[self.using].vendor == "postgresql":
            return self._returning(
                "UPDATE {table} AS s SET {data} = v.new FROM (VALUES {values}) AS v(k, old, new) "
                "WHERE s.{key} = v.k AND s.{data} = v.old RETURNING s.{key}",
                [(session_key, old, new) for session_key, old, new in writes],
            )
        table, key, data = self._sql()
        with connections[self.using].cursor() as cursor:
            # One statement, many parameter sets: one pipeline on psycopg 3, one prepared
            # statement on SQLite; rowcount is the total.
            cursor.executemany(
                f"UPDATE {table} SET {data} = %s WHERE {key} = %s AND {data} = %s",  # noqa: S608
                [(new, session_key, old) for session_key, old, new in writes],
            )
            if cursor.rowcount == len(writes):
                return {session_key for session_key, _, _ in writes}
        # Some rows changed under us: the ones holding our new content are the written ones.
        current = self.fetch([session_key for session_key, _, _ in writes])
        return {
            session_key
            for session_key, _, new in writes
            if session_key in current and current[session_key].raw == new
        }

    def _returning(self, template: str, rows: list[tuple]) -> set[str]:
        """PostgreSQL: one statement per CHUNK rows joined to a VALUES list; the keys it
        really changed come back with RETURNING (a row changed under us does not match)."""
        table, key, data = self._sql()
        done: set[str] = set()
        with connections[self.using].cursor() as cursor:
            for start in range(0, len(rows), CHUNK):
                chunk = rows[start : start + CHUNK]
                width = len(chunk[0])
                values = ", ".join(["(" + ", ".join(["%s"] * width) + ")"] * len(chunk))
                sql = template.format(table=table, key=key, data=data, values=values)
                cursor.execute(sql, [value for row in chunk for value in row])
                done.update(found for (found,) in cursor.fetchall())
        return done

    def _delete(self, deletes: list[Stored]) -> set[str]:
        if not deletes:
            return set()
        if connections[self.using].vendor == "postgresql":
            return self._returning(
                "DELETE FROM {table} AS s USING (VALUES {values}) AS v(k, old) "
                "WHERE s.{key} = v.k AND s.{data} = v.old RETURNING s.{key}",
                [(stored.key, stored.raw) for stored in deletes],
            )
        table, key, data = self._sql()
        with connections[self.using].cursor() as cursor:
            cursor.executemany(
                f"DELETE FROM {table} WHERE {key} = %s AND {data} = %s",  # noqa: S608
                [(stored.key, stored.raw) for stored in deletes],
            )
        remaining = self.fetch([stored.key for stored in deletes])
        return {stored.key for stored in deletes} - set(remaining)

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
