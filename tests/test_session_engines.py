"""The guarded engines keep Django's session contract (issue 9, items 18-21), also on the
path Django's own tests never take: a session holding patient data."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import import_module
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.contrib.sessions.backends.base import UpdateError
from django.core.management import call_command
from django.test import override_settings

from patient_data import checks, patient_session
from patient_data.registry import META_KEY
from tests.engine_support import (
    LOCMEM,
    engine_fixture,  # noqa: F401 - the "engine" fixture
)

ROOT = Path(__file__).resolve().parent.parent


def _holding_patient_data(engine):
    session = engine.SessionStore()
    patient_session.store(session, "patient_summary", {"problems": ["SYNTH-P"]})
    session["note"] = "kept"
    session.save()
    return session


# -- item 18: every async entry point is async-safe with patient data -----------------------


@pytest.mark.django_db(transaction=True)
async def test_every_async_entry_point_works_inside_the_event_loop(engine):
    session = await sync_to_async(_holding_patient_data)(engine)
    await session.acycle_key()
    await session.asave()
    again = engine.SessionStore(session.session_key)
    assert (await again.aload())["note"] == "kept"
    assert await again.aget("patient_summary") == {"problems": ["SYNTH-P"]}
    await again.acreate()
    await again.asave()
    await again.aflush()
    assert await again.aget("patient_summary") is None


@pytest.mark.django_db(transaction=True)
async def test_an_async_key_cycle_keeps_the_patient_data_under_the_guard(engine):
    session = await sync_to_async(_holding_patient_data)(engine)
    old_key = session.session_key
    await session.acycle_key()
    await session.asave()
    assert session.session_key != old_key or engine.SessionStore.client_side
    stored = await sync_to_async(lambda: engine.SessionStore(session.session_key).load())()
    assert stored["patient_summary"] == {"problems": ["SYNTH-P"]}
    assert stored[META_KEY]["ref"] == session[META_KEY]["ref"]


# -- item 19: a never-loaded session whose stored form is gone -------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["db", "cached_db", "cache", "file"])
@pytest.mark.parametrize("family", ["django.contrib.sessions.backends", "patient_data.sessions"])
def test_saving_a_never_loaded_session_that_is_gone_raises_update_error(name, family, tmp_path):
    module = import_module(f"{family}.{name}")
    with override_settings(SESSION_FILE_PATH=str(tmp_path)):
        module.SessionStore._storage_path = str(tmp_path)
        try:
            kept = module.SessionStore()
            kept["note"] = "x"
            kept.save()
            kept.delete()
            with pytest.raises(UpdateError):
                module.SessionStore(kept.session_key).save()
        finally:
            del module.SessionStore._storage_path


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("name", ["db", "cached_db", "cache", "file"])
async def test_async_saving_a_never_loaded_session_that_is_gone_raises_update_error(name, tmp_path):
    module = import_module(f"patient_data.sessions.{name}")
    with override_settings(SESSION_FILE_PATH=str(tmp_path)):
        module.SessionStore._storage_path = str(tmp_path)
        try:
            kept = module.SessionStore()
            await kept.aset("note", "x")
            await kept.asave()
            await kept.adelete()
            with pytest.raises(UpdateError):
                await module.SessionStore(kept.session_key).asave()
        finally:
            del module.SessionStore._storage_path


# -- item 20: the file engine on a fresh NCP_VAR_DIR -----------------------------------------


@pytest.mark.django_db
def test_the_file_engine_creates_its_folder(tmp_path):
    folder = tmp_path / "sessions"
    module = import_module("patient_data.sessions.file")
    with override_settings(
        SESSION_ENGINE="patient_data.sessions.file", SESSION_FILE_PATH=str(folder)
    ):
        module.SessionStore.__dict__.get("_storage_path") and delattr(
            module.SessionStore, "_storage_path"
        )
        try:
            call_command("cleanup_patient_sessions", "--dry-run", stdout=open(os.devnull, "w"))
            assert folder.is_dir()
            assert folder.stat().st_mode & 0o777 == 0o700
        finally:
            del module.SessionStore._storage_path


@pytest.mark.parametrize(
    "command",
    [
        ["manage.py", "startup_cleanup_patient_sessions", "--force"],
        ["manage.py", "cleanup_patient_sessions", "--dry-run"],
    ],
)
def test_commands_start_on_a_fresh_var_dir_with_file_sessions(command, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(
        DJANGO_SETTINGS_MODULE="ncp_asgi.settings",
        NCP_VAR_DIR=str(tmp_path / "var"),
        SESSION_ENGINE="patient_data.sessions.file",
        DEBUG="1",
        SECRET_KEY="synthetic-test-key-" + "x" * 40,
    )
    env.pop("SESSION_FILE_PATH", None)
    run = [sys.executable, "manage.py", "migrate", "-v0"]
    subprocess.run(run, cwd=ROOT, env=env, check=True, timeout=120)
    done = subprocess.run(
        [sys.executable, *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert (tmp_path / "var" / "sessions").is_dir()


# -- item 21: cached_db with a per-process cache ---------------------------------------------

REDIS = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "x"}}


@pytest.mark.parametrize(
    ("engine_name", "caches", "warned"),
    [
        ("patient_data.sessions.cached_db", LOCMEM, True),
        ("patient_data.sessions.cached_db", REDIS, False),
        ("patient_data.sessions.cache", LOCMEM, True),
        ("patient_data.sessions.db", LOCMEM, False),
    ],
)
def test_a_per_process_session_cache_is_warned_about(engine_name, caches, warned):
    with override_settings(SESSION_ENGINE=engine_name, CACHES=caches):
        ids = [message.id for message in checks.check_sessions()]
    assert ("patient_data.W020" in ids) is warned
