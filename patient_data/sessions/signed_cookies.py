from __future__ import annotations

from django.contrib.sessions.backends.signed_cookies import SessionStore as DjangoSessionStore

from patient_data.sessions.base import GuardedSessionMixin


class SessionStore(GuardedSessionMixin, DjangoSessionStore):
    """Django's ``signed_cookies`` session store with the no-resurrection guard."""

    client_side = True
    verify_generation_on_load = True
