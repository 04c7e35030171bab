from __future__ import annotations

import os

from django.conf import settings
from django.contrib.sessions.backends.file import SessionStore as DjangoSessionStore

from patient_data.sessions.base import GuardedSessionMixin


class SessionStore(GuardedSessionMixin, DjangoSessionStore):
    """Django's ``file`` session store with the no-resurrection guard."""

    @classmethod
    def _get_storage_path(cls) -> str:
        # A fresh NCP_VAR_DIR has no sessions/ folder yet: create it (owner only) rather than
        # fail every request and command with ImproperlyConfigured. Django caches the path.
        path = getattr(settings, "SESSION_FILE_PATH", None)
        if path and "_storage_path" not in cls.__dict__:
            os.makedirs(path, mode=0o700, exist_ok=True)
        return super()._get_storage_path()
