from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.sessions.backends.base import UpdateError
from django.contrib.sessions.backends.db import SessionStore as DjangoSessionStore
from django.db import DatabaseError, connections, router
from django.utils import timezone

from patient_data.rows import converted
from patient_data.sessions.base import GuardedSessionMixin


class RowRead:
    """The session row read by one statement of its own instead of the ORM's ``get``.

    Every request, socket command and cleanup reads the row (a cleanup twice); the ORM builds
    and compiles a query each time, about four fifths of the read's CPU in the client (197
    against 41 µs: ``bench/request_parts.py``). Same rows as Django's
    ``objects.get(session_key=..., expire_date__gt=now)``, the values prepared by the model's
    fields and converted as the ORM converts them, the router's database; the instance
    carries the key, the data and the expiry (``cached_db`` reads it), its other fields (a
    custom session model's) load on access, as ``only()`` would have them.
    """

    def _get_session_from_db(self) -> Any:
        model = self.model
        using = router.db_for_read(model)
        connection = connections[using]
        meta = model._meta
        key, expiry = meta.pk, meta.get_field("expire_date")
        fields = [meta.get_field("session_data"), expiry]
        columns = [field.get_col(meta.db_table) for field in fields]
        quote = connection.ops.quote_name
        selected = ", ".join(quote(field.column) for field in fields)
        sql = (
            f"SELECT {selected} FROM {quote(meta.db_table)} "  # noqa: S608 - model names, values bound
            f"WHERE {quote(key.column)} = %s AND {quote(expiry.column)} > %s"
        )
        params = [
            key.get_db_prep_value(self.session_key, connection),
            expiry.get_db_prep_value(timezone.now(), connection),
        ]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            row = cursor.fetchone()
        if row is None:
            self._session_key = None
            return None
        values = [self.session_key, *converted(connection, columns, row)]
        return model.from_db(using, [key.attname, *(field.attname for field in fields)], values)

    async def _aget_session_from_db(self) -> Any:
        return await sync_to_async(self._get_session_from_db)()  # as the ORM's aget: one hop


class SessionStore(RowRead, GuardedSessionMixin, DjangoSessionStore):
    """Django's ``db`` session store with the no-resurrection guard."""

    loads_in_thread = True

    def save_unguarded(self, must_create: bool = False) -> None:
        """Write the blob as it is (the caller holds the generation lock, in its transaction).

        An existing row is one ``UPDATE`` of the model's columns: no savepoint of its own, as
        Django's ``save`` takes for a create's ``IntegrityError`` (an error rolls back the
        caller's transaction), and none of the ORM's per-save work (a cleanup's hot path).
        """
        if must_create or self.session_key is None:
            return super().save_unguarded(must_create)
        row = self.create_model_instance(self._get_session())
        using = router.db_for_write(self.model, instance=row)
        connection = connections[using]
        meta = self.model._meta
        fields = [field for field in meta.concrete_fields if not field.primary_key]
        quote = connection.ops.quote_name
        assigned = ", ".join(f"{quote(field.column)} = %s" for field in fields)
        values = [f.get_db_prep_save(getattr(row, f.attname), connection) for f in fields]
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    f"UPDATE {quote(meta.db_table)} SET {assigned} "  # noqa: S608 - model names, values bound
                    f"WHERE {quote(meta.pk.column)} = %s",
                    [*values, row.pk],
                )
                updated = cursor.rowcount
        except DatabaseError as error:  # as Django's save says it
            raise UpdateError from error
        if updated != 1:
            raise UpdateError  # the row went away meanwhile
        return None
