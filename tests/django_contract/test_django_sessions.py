"""Django's own session tests, run against every guarded engine.

Each of Django's engine test classes runs twice: as Django wrote it (the control, Django's
engine) and as a subclass whose ``backend`` is the guarded engine of the same kind. The rest
of Django's session tests (middleware, clearsessions, SessionBase) run once, as the control.
"""

from __future__ import annotations

from importlib import import_module

from django.test import override_settings
from sessions_tests import tests as django_tests

#: Django's test class -> the guarded engine of the same kind.
GUARDED = {
    "DatabaseSessionTests": "db",
    "DatabaseSessionWithTimeZoneTests": "db",
    "CacheDBSessionTests": "cached_db",
    "CacheDBSessionWithTimeZoneTests": "cached_db",
    "FileSessionTests": "file",
    "FileSessionPathLibTests": "file",
    "CacheSessionTests": "cache",
    "CookieSessionTests": "signed_cookies",
}
CONTROL_ONLY = ["SessionMiddlewareTests", "ClearSessionsCommandTests", "SessionBaseTests"]


def _own_storage_path(self) -> None:
    # Django's setUp deletes the cached folder from the class under test; the guarded class
    # caches its own, which must be there to delete.
    self.backend._storage_path = None
    super(type(self), self).setUp()


def _guarded(name: str, engine: str) -> type:
    base = getattr(django_tests, name)
    attrs = {
        "backend": import_module(f"patient_data.sessions.{engine}").SessionStore,
        "__module__": __name__,
        "__qualname__": f"Guarded{name}",
    }
    if hasattr(base, "session_engine"):
        attrs["session_engine"] = f"patient_data.sessions.{engine}"
    if engine == "file":
        attrs["setUp"] = _own_storage_path
        # Django's test names its engine in a decorator: the same test, with the guarded one.
        attrs["test_clearsessions_command"] = override_settings(
            SESSION_ENGINE="patient_data.sessions.file", SESSION_COOKIE_AGE=0
        )(base.test_clearsessions_command.__wrapped__)
    return type(f"Guarded{name}", (base,), attrs)


for _name, _engine in GUARDED.items():
    globals()[_name] = getattr(django_tests, _name)
    globals()[f"Guarded{_name}"] = _guarded(_name, _engine)
for _name in CONTROL_ONLY:
    globals()[_name] = getattr(django_tests, _name)
