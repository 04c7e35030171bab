from __future__ import annotations

from django.contrib.sessions.backends.file import SessionStore as DjangoSessionStore

from patient_data.sessions.base import GuardedSessionMixin


class SessionStore(GuardedSessionMixin, DjangoSessionStore):
    """Django's ``file`` session store with the no-resurrection guard."""
