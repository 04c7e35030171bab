from __future__ import annotations

from typing import Any

from django.contrib.sessions.backends.signed_cookies import SessionStore as DjangoSessionStore

from patient_data.sessions.base import GuardedSessionMixin


class SessionStore(GuardedSessionMixin, DjangoSessionStore):
    """Django's ``signed_cookies`` session store with the no-resurrection guard."""

    client_side = True
    verify_generation_on_load = True

    def stored_blob(self) -> dict[str, Any] | None:
        # The cookie this request carried is the only stored form: nothing else to merge.
        return dict(self._get_session())
