"""Which bulk backend serves the configured SESSION_ENGINE."""

from __future__ import annotations

from importlib import import_module

from django.conf import settings
from django.contrib.sessions.backends.cache import SessionStore as CacheStore
from django.contrib.sessions.backends.cached_db import SessionStore as CachedDatabaseStore
from django.contrib.sessions.backends.db import SessionStore as DatabaseStore
from django.contrib.sessions.backends.file import SessionStore as FileStore
from django.contrib.sessions.backends.signed_cookies import SessionStore as SignedCookieStore

from patient_data.bulk.backends.base import Backend, Stored, Undecodable, UnsupportedBackend
from patient_data.bulk.backends.cache import RedisCacheBackend
from patient_data.bulk.backends.db import CachedDatabaseBackend, DatabaseBackend
from patient_data.bulk.backends.file import FileBackend
from patient_data.bulk.backends.signed_cookies import SignedCookieBackend

# Most specific first: Django's cached_db store is a subclass of its db store.
_BY_STORE = (
    (CachedDatabaseStore, CachedDatabaseBackend),
    (DatabaseStore, DatabaseBackend),
    (CacheStore, RedisCacheBackend),
    (FileStore, FileBackend),
    (SignedCookieStore, SignedCookieBackend),
)


def backend_for(engine: str | None = None) -> Backend:
    """The bulk backend for ``engine`` (default SESSION_ENGINE), or ``UnsupportedBackend``."""
    engine = engine or settings.SESSION_ENGINE
    store_class = import_module(engine).SessionStore
    for django_store, backend_class in _BY_STORE:
        if issubclass(store_class, django_store):
            return backend_class(engine, store_class)
    raise UnsupportedBackend(
        f"SESSION_ENGINE {engine!r} is not built on one of Django's session stores "
        "(db, cached_db, cache, file, signed_cookies), so the bulk cleanup cannot read it. "
        "Way out: use one of patient_data.sessions.{db,cached_db,cache,file,signed_cookies}; "
        "`manage.py startup_cleanup_patient_sessions` advances the patient-data epoch, which "
        "voids patient data in every session at its next request."
    )


__all__ = ["Backend", "Stored", "Undecodable", "UnsupportedBackend", "backend_for"]
