from __future__ import annotations

from django.contrib.sessions.backends.db import SessionStore as DjangoSessionStore

from patient_data.sessions.base import GuardedSessionMixin


class SessionStore(GuardedSessionMixin, DjangoSessionStore):
    """Django's ``db`` session store with the no-resurrection guard."""

    loads_in_thread = True
