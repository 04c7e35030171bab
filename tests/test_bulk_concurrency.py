"""Bulk runs on a live system (original defect 14): no lost non-patient change of a concurrent
request, no patient data brought back, no ``SessionInterrupted``.

Two interleavings per backend: the request writes *after* the sweep (the cleanup generation
strips its stale patient data) and *between* the sweep's read and its write (the sweep's
compare-and-set sees the change, re-reads and re-processes instead of overwriting it).
"""

from __future__ import annotations

import threading

import pytest
from django.contrib.auth import get_user_model
from django.db import connections

from patient_data.bulk.sweep import Sweep
from patient_data.models import CleanupEvent
from tests import urls as test_urls
from tests.bulk_support import (
    SERVER_ENGINES,
    engine_fixture,  # noqa: F401 - the "engine" fixture
    load,
    make_session,
    run,
)
from tests.conftest import Driver

pytestmark = pytest.mark.django_db(transaction=True)
every_backend = pytest.mark.parametrize("engine", SERVER_ENGINES, indirect=True)


class SlowRequest(threading.Thread):
    """Loads the session, waits to be released, then changes a non-patient key and saves."""

    def __init__(self, engine, key: str) -> None:
        super().__init__(daemon=True)
        self.engine, self.key = engine, key
        self.loaded, self.release, self.saved = (threading.Event() for _ in range(3))
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            store = self.engine.SessionStore(self.key)
            assert "patient_summary" in store.keys()
            self.loaded.set()
            assert self.release.wait(timeout=10)
            store["note"] = "changed-by-slow-request"
            store.save()
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            self.error = exc
        finally:
            connections.close_all()  # this thread's connection must not outlive the test
            self.saved.set()


@every_backend
def test_request_saving_after_the_sweep_keeps_its_change_not_the_patient_data(engine, clinician):
    key = make_session(engine, user=clinician)
    slow = SlowRequest(engine, key)
    slow.start()
    assert slow.loaded.wait(timeout=10)
    code, _ = run("cleanup_patient_sessions", "--force")
    slow.release.set()
    slow.join(timeout=20)
    assert code == 0
    assert slow.error is None  # no UpdateError / SessionInterrupted
    data = load(engine, key)
    assert data["note"] == "changed-by-slow-request"
    assert "patient_summary" not in data
    assert "patient_cda_SYNTH42" not in data


@every_backend
def test_request_saving_between_read_and_write_is_not_overwritten(engine, clinician, monkeypatch):
    key = make_session(engine, user=clinician)
    slow = SlowRequest(engine, key)
    slow.start()
    assert slow.loaded.wait(timeout=10)
    original = Sweep._write

    def write_after_the_request(self, plans):
        slow.release.set()  # the request saves its full blob, patient data included
        assert slow.saved.wait(timeout=20)
        return original(self, plans)

    monkeypatch.setattr(Sweep, "_write", write_after_the_request)
    code, out = run("cleanup_patient_sessions", "--force")
    slow.join(timeout=20)
    assert code == 0, out
    assert slow.error is None
    data = load(engine, key)
    assert data["note"] == "changed-by-slow-request"
    assert "patient_summary" not in data
    assert CleanupEvent.objects.count() == 1
    assert "1 sessions, 2 items removed, 0 errors" in out


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_real_slow_request_during_a_bulk_run(kind):
    """A request through the whole middleware stack holds the session while the command runs."""
    user = get_user_model().objects.create_user("slow-bulk", password="synthetic-pass-1")
    browser = Driver(kind)
    browser.force_login(user)
    browser.get("/_test/store/")
    with test_urls.slow_request(browser, "/_test/slow-note/") as result:
        code, _ = run("cleanup_patient_sessions", "--force")
        assert code == 0
    assert result["r"].status_code == 200
    stored = browser.stored()
    assert stored["note"] == "written-by-slow-request"
    assert "patient_summary" not in stored
    assert "current_patient_id" not in stored
    assert stored["_auth_user_id"] == str(user.pk)
