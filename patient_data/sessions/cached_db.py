from __future__ import annotations

from typing import Any

from django.contrib.sessions.backends.cached_db import SessionStore as DjangoSessionStore

from patient_data.sessions.base import GuardedSessionMixin
from patient_data.sessions.db import RowRead


class SessionStore(RowRead, GuardedSessionMixin, DjangoSessionStore):
    """Django's ``cached_db`` session store with the no-resurrection guard."""

    verify_generation_on_load = True
    loads_in_thread = True

    def stored_blob(self) -> dict[str, Any] | None:
        # The row, not a cached copy: a local-memory cache is per process and may be stale.
        found = self.__class__(self.session_key)._get_session_from_db()
        return self.decode(found.session_data) if found else None

    async def astored_blob(self) -> dict[str, Any] | None:
        found = await self.__class__(self.session_key)._aget_session_from_db()
        return self.decode(found.session_data) if found else None
