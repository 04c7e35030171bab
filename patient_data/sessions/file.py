from __future__ import annotations

import contextlib
import os
import tempfile

from django.conf import settings
from django.contrib.sessions.backends.file import SessionStore as DjangoSessionStore
from django.core.exceptions import ImproperlyConfigured

from patient_data.sessions.base import GuardedSessionMixin


class SessionStore(GuardedSessionMixin, DjangoSessionStore):
    """Django's ``file`` session store with the no-resurrection guard."""

    @classmethod
    def _get_storage_path(cls) -> str:
        # Django's check, cached on this class itself (not found on Django's class through
        # inheritance); and a fresh NCP_VAR_DIR has no sessions/ folder yet: it is created
        # (owner only) rather than fail every request and command. Only the last level: a
        # path whose parent is missing stays the configuration error Django reports.
        cached = cls.__dict__.get("_storage_path")
        if cached is not None:
            return cached
        path = getattr(settings, "SESSION_FILE_PATH", None) or tempfile.gettempdir()
        with contextlib.suppress(FileExistsError, FileNotFoundError):
            os.mkdir(path, mode=0o700)
        if not os.path.isdir(path):
            raise ImproperlyConfigured(
                f"The session storage path {path!r} doesn't exist. Please set your "
                "SESSION_FILE_PATH setting to an existing directory in which Django can "
                "store session data."
            )
        cls._storage_path = path
        return path
