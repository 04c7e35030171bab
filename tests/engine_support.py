"""Every guarded session engine, configured for one test (local-memory cache, a temporary
folder for file sessions)."""

from __future__ import annotations

from importlib import import_module

import pytest
from django.core.cache import caches
from django.test import override_settings

ENGINES = ["db", "cached_db", "cache", "file", "signed_cookies"]
LOCMEM = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}


@pytest.fixture(name="engine", params=ENGINES)
def engine_fixture(request, tmp_path):
    """Yields the engine module ``patient_data.sessions.<name>``, configured."""
    name = f"patient_data.sessions.{request.param}"
    module = import_module(name)
    # Local memory, whatever REDIS_URL says: clearing it afterwards touches nothing shared.
    with override_settings(SESSION_ENGINE=name, SESSION_FILE_PATH=str(tmp_path), CACHES=LOCMEM):
        module.SessionStore._storage_path = str(tmp_path)  # Django caches it on the class
        try:
            yield module
        finally:
            del module.SessionStore._storage_path
            caches["default"].clear()


def engine_name(engine) -> str:
    return engine.__name__.rsplit(".", 1)[1]
