from __future__ import annotations

from django.contrib.sessions.backends.cached_db import SessionStore as DjangoSessionStore

from patient_data.sessions.base import GuardedSessionMixin


class SessionStore(GuardedSessionMixin, DjangoSessionStore):
    """Django's ``cached_db`` session store with the no-resurrection guard."""

    verify_generation_on_load = True
