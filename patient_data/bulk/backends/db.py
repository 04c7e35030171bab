"""``db`` and ``cached_db`` sessions: rows of the session model.

Pages are read by key range (no long-lived cursor, constant memory). A write locks the rows it
changes (``SELECT ... FOR UPDATE``; on SQLite the IMMEDIATE transaction holds the write lock),
compares them with what was read and writes the unchanged ones in one statement:
``UPDATE ... FROM (VALUES ...)`` on PostgreSQL, ``executemany`` elsewhere.
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

    def fetch(self, keys: list[str], *, lock: bool = False) -> dict[str, Stored]:
        found = {}
        for start in range(0, len(keys), CHUNK):
            query = self._rows().filter(session_key__in=keys[start : start + CHUNK])
            if lock:
                query = query.select_for_update().order_by("session_key")
            found.update((key, Stored(key, raw, expires)) for key, raw, expires in query)
        return found

    def apply(self, updates: list[tuple[Stored, dict]], deletes: list[Stored]) -> set[str]:
        expected = {stored.key: stored.raw for stored, _ in updates}
        expected.update((stored.key, stored.raw) for stored in deletes)
        with transaction.atomic(using=self.using):
            current = self.fetch(sorted(expected), lock=True)
            conflicts = {
                key
                for key, raw in expected.items()
                if key not in current or current[key].raw != raw
            }
            writes = [
                (stored.key, self.encode(data))
                for stored, data in updates
                if stored.key not in conflicts
            ]
            gone = [stored.key for stored in deletes if stored.key not in conflicts]
            self._update(writes)
            for start in range(0, len(gone), CHUNK):
                chunk = gone[start : start + CHUNK]
                self.model._default_manager.using(self.using).filter(session_key__in=chunk).delete()
            self.written([key for key, _ in writes] + gone)
        return conflicts

    def _update(self, writes: list[tuple[str, str]]) -> None:
        if not writes:
            return
        connection = connections[self.using]
        quote = connection.ops.quote_name
        table = quote(self.model._meta.db_table)
        key, data = quote("session_key"), quote("session_data")
        with connection.cursor() as cursor:
            if connection.vendor != "postgresql":
                cursor.executemany(
                    f"UPDATE {table} SET {data} = %s WHERE {key} = %s",  # noqa: S608 - names from the model
                    [(new, session_key) for session_key, new in writes],
                )
                return
            for start in range(0, len(writes), CHUNK):
                chunk = writes[start : start + CHUNK]
                values = ", ".join(["(%s, %s)"] * len(chunk))
                cursor.execute(
                    f"UPDATE {table} SET {data} = v.data FROM (VALUES {values}) AS v(key, data) "  # noqa: S608
                    f"WHERE {table}.{key} = v.key",
                    [value for pair in chunk for value in pair],
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
