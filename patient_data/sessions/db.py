from __future__ import annotations

from django.contrib.sessions.backends.base import UpdateError
from django.contrib.sessions.backends.db import SessionStore as DjangoSessionStore
from django.db import DatabaseError, router

from patient_data.sessions.base import GuardedSessionMixin


class SessionStore(GuardedSessionMixin, DjangoSessionStore):
    """Django's ``db`` session store with the no-resurrection guard."""

    loads_in_thread = True

    def save_unguarded(self, must_create: bool = False) -> None:
        """Write the blob as it is (the caller holds the generation lock, in its transaction).

        An update of the row needs no savepoint of its own, as Django's ``save`` takes (there
        for a create's ``IntegrityError``): an error rolls back the caller's transaction.
        """
        if must_create or self.session_key is None:
            return super().save_unguarded(must_create)
        row = self.create_model_instance(self._get_session())
        try:
            row.save(force_update=True, using=router.db_for_write(self.model, instance=row))
        except DatabaseError as error:  # the row went away meanwhile, as Django's save says
            raise UpdateError from error
        return None
