"""Helpers for the bulk-cleanup tests: sessions on each backend, snapshots, command runs."""

from __future__ import annotations

import io
import os
import time
import uuid
from importlib import import_module

import pytest
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.models import Session
from django.core.cache import caches
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from django.utils import timezone
from hypothesis import strategies as st

from patient_data import patient_session
from patient_data.models import CleanupEvent, PatientDataEpoch, PatientSessionState
from patient_data.registry import META_KEY

REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
SERVER_ENGINES = ["db", "cached_db", "file", "cache"]


def redis_or_skip() -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis does not answer at {REDIS_URL} ({type(exc).__name__})")


def redis_caches(prefix: str) -> dict:
    return {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": prefix,
        }
    }


def flush_redis_prefix(prefix: str) -> None:
    client = caches["default"]._cache.get_client(write=True)
    keys = list(client.scan_iter(match=f"{prefix}:*"))
    if keys:
        client.delete(*keys)


@pytest.fixture(name="engine")
def engine_fixture(request, tmp_path):
    """``request.param`` is a backend name; yields the session engine module, configured."""
    name = request.param
    overrides = {
        "SESSION_ENGINE": f"patient_data.sessions.{name}",
        "SESSION_FILE_PATH": str(tmp_path),
    }
    prefix = None
    if name == "cache":
        redis_or_skip()
        prefix = f"test-bulk-{uuid.uuid4().hex[:8]}"
        overrides["CACHES"] = redis_caches(prefix)
    with override_settings(**overrides):
        module = import_module(overrides["SESSION_ENGINE"])
        # Django caches the file-session directory on the class: point it at this test's.
        previous = module.SessionStore.__dict__.get("_storage_path")
        module.SessionStore._storage_path = str(tmp_path)
        try:
            yield module
        finally:
            if previous is None:
                del module.SessionStore._storage_path
            else:
                module.SessionStore._storage_path = previous
            if prefix is not None:
                flush_redis_prefix(prefix)
            if name == "cached_db":
                caches["default"].clear()


def login(session, user) -> None:
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()


def make_session(
    engine, *, patient: bool = True, user=None, idle_minutes: float = 0, note: str = "keep-me"
) -> str:
    """A stored session; ``idle_minutes`` moves its last activity into the past."""
    session = engine.SessionStore()
    if user is not None:
        login(session, user)
    session["note"] = note
    if patient:
        patient_session.store(session, "patient_summary", {"problems": ["SYNTH-P"]})
        patient_session.store(session, "patient_cda_SYNTH42", "<synthetic/>")
        if idle_minutes:
            past = time.time() - idle_minutes * 60
            session[META_KEY] = {**session[META_KEY], "seen": past, "since": past}
    session.save()
    return session.session_key


def load(engine, key: str) -> dict:
    return dict(engine.SessionStore(key).load())


def expire(engine, key: str) -> None:
    """Move the session past its expiry date, as its backend measures it."""
    past = timezone.now() - timezone.timedelta(minutes=5)
    name = engine.__name__.rsplit(".", 1)[1]
    if name in {"db", "cached_db"}:
        Session.objects.filter(session_key=key).update(expire_date=past)
        caches["default"].clear()
    elif name == "file":
        old = time.time() - settings.SESSION_COOKIE_AGE - 60
        os.utime(session_file(key), (old, old))
    else:
        raise ValueError(name)


def tamper(engine, key: str) -> None:
    """Replace the stored session by something that does not decode."""
    name = engine.__name__.rsplit(".", 1)[1]
    if name == "db":
        Session.objects.filter(session_key=key).update(session_data="tampered:blob")
    elif name == "file":
        with open(session_file(key), "w") as handle:
            handle.write("tampered:blob")
    else:
        cache = caches["default"]
        client = cache._cache.get_client(write=True)
        client.set(cache.make_key(engine.SessionStore.cache_key_prefix + key), b"\x80garbage")


def session_file(key: str) -> str:
    return os.path.join(settings.SESSION_FILE_PATH, settings.SESSION_COOKIE_NAME + key)


def snapshot(engine) -> dict:
    """Everything a run could change, compared row for row / byte for byte."""
    name = engine.__name__.rsplit(".", 1)[1]
    stored: dict = {}
    if name in {"db", "cached_db"}:
        stored = {
            row[0]: row[1:]
            for row in Session.objects.values_list("session_key", "session_data", "expire_date")
        }
    elif name == "file":
        path = settings.SESSION_FILE_PATH
        for entry in sorted(os.listdir(path)):
            with open(os.path.join(path, entry), "rb") as handle:
                stored[entry] = (handle.read(), os.stat(os.path.join(path, entry)).st_mtime_ns)
    elif name == "cache":
        cache = caches["default"]
        client = cache._cache.get_client(write=True)
        pattern = cache.make_key(engine.SessionStore.cache_key_prefix) + "*"
        for key in sorted(client.scan_iter(match=pattern)):
            # absolute expiry (ms): identical unless the key was written with a new TTL
            stored[key] = (client.get(key), client.execute_command("PEXPIRETIME", key))
    return {
        "sessions": stored,
        "states": list(PatientSessionState.objects.order_by("ref").values_list()),
        "events": list(CleanupEvent.objects.order_by("id").values_list()),
        "epoch": list(PatientDataEpoch.objects.values_list("value", flat=True)),
    }


def run(command: str, *args: str) -> tuple[int, str]:
    """Run a management command in-process; returns (exit code, stdout)."""
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command(command, *args, stdout=out, stderr=err)
    except CommandError as exc:
        return exc.returncode, out.getvalue() + str(exc)
    return 0, out.getvalue()


#: Arguments of ``corrupted`` after the session (hypothesis draws them).
CORRUPTIONS = st.tuples(
    st.sampled_from(["none", "payload", "signature", "timestamp", "truncate"]),
    st.integers(min_value=0, max_value=400),
    st.characters(codec="ascii"),
)


def corrupted(raw: str, how: str, cut: int, char: str) -> str:
    """``raw`` (``value:timestamp:signature``) with one character of a part replaced, a
    character put before the timestamp, or cut short at ``cut``; as it is for ``none``."""
    value, timestamp, signature = raw.rsplit(":", 2)
    if how == "payload":
        at = cut % len(value)
        value = value[:at] + char + value[at + 1 :]
    elif how == "signature":
        at = cut % len(signature)
        signature = signature[:at] + char + signature[at + 1 :]
    elif how == "timestamp":
        timestamp = char + timestamp
    raw = f"{value}:{timestamp}:{signature}"
    if how == "truncate":
        raw = raw[: cut % (len(raw) + 1)]
    return raw
