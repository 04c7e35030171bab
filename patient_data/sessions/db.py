from __future__ import annotations

from django.contrib.sessions.backends.base import UpdateError
from django.contrib.sessions.backends.db import SessionStore as DjangoSessionStore
from django.db import DatabaseError, connections, router

from patient_data.sessions.base import GuardedSessionMixin


class SessionStore(GuardedSessionMixin, DjangoSessionStore):
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
