"""What the parts of a steady-state patient page cost, each alone (the floor's breakdown).

    .venv/bin/python bench/request_parts.py

bench/request_overhead.py times whole requests; this times the parts no middleware can
remove, in this process, CPU and wall per repetition (median of rounds):

- ``template``: ``render()`` of the patient page with the context its view built;
- ``connection``: opening and closing the database connection (Django opens one per request
  under ASGI: the request's worker thread is new, and so is its connection);
- ``queries``: the steady page's three queries (session row, user, patient) on an open
  connection;
- ``session row``: that first query alone, as the ORM's ``get`` (Django's engine) and as the
  guarded engine reads it (``patient_data.sessions.db.RowRead``);
- ``user``: the request's user from its loaded session, session hash verified, by Django's
  ``auth.get_user`` (the ORM's ``get``) and by ``patient_data.rows.verified_user``;
- ``session blob decode``: the signature check and JSON of the stored session (its load);
- ``user's session hash``: the HMAC Django compares with the session's (auth's verification);
- ``conf reads``: the ten ``patient_data.conf`` settings reads a request makes at most;
- ``patient middlewares (2)``: the two patient middlewares around a view that only answers,
  on a loaded steady session (no write due), against ``... view alone``: their own cost,
  which whole requests (bench/request_overhead.py) only show within their noise. The part
  fails if the middlewares make a thread hop;
- ``hop: first`` / ``hop: each further``: ``sync_to_async`` of a no-op inside a request's
  ``ThreadSensitiveContext`` (the first starts the request's worker thread, closing the
  context joins it), and each further one.

Same throw-away SQLite database as bench/request_overhead.py (synthetic demo data, a
temporary NCP_VAR_DIR, DATABASE_URL / REDIS_URL ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import import_module
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.request_overhead import FULL, HOST, USERNAME, bench_env, prepare_database


def timed(run: Callable[[], None], repeat: int, rounds: int) -> tuple[float, float]:
    """Median over rounds of (wall, CPU) microseconds per call of ``run``."""
    walls, cpus = [], []
    for _ in range(rounds):
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(repeat):
            run()
        walls.append(1e6 * (time.perf_counter() - start) / repeat)
        cpus.append(1e6 * (time.process_time() - cpu) / repeat)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=200, help="calls per round (200)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds per part (7)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ncp-bench-") as var_dir:
        env = bench_env(var_dir, secrets.token_urlsafe(16))
        prepare_database(env)
        os.environ.update({**env, "DJANGO_SETTINGS_MODULE": FULL})
        measure(options)


def measure(options: argparse.Namespace) -> None:
    import django

    django.setup()
    from asgiref.sync import SyncToAsync, ThreadSensitiveContext, sync_to_async
    from django.conf import settings
    from django.contrib import auth
    from django.contrib.auth import get_user_model
    from django.contrib.sessions.models import Session
    from django.db import connection
    from django.http import HttpResponse
    from django.shortcuts import render
    from django.test import Client, RequestFactory
    from django.utils import timezone

    from patient_data import rows
    from patient_data.conf import conf
    from patient_data.middleware.patient_session_security import (
        PatientSessionCleanupMiddleware,
        PatientSessionSecurityMiddleware,
    )
    from patient_data.models import DemoPatient
    from patient_data.views import portal

    patient = DemoPatient.objects.order_by("patient_id").first()
    client = Client(HTTP_HOST=HOST)
    password = os.environ["BENCH_PASSWORD"]
    if not client.login(
        request=RequestFactory().post("/accounts/login/"), username=USERNAME, password=password
    ):
        raise RuntimeError("login failed")
    client.post("/patients/", {"patient_id": patient.patient_id})
    ref = client.session["patient_search_results"][0]["ref"]
    session_key = client.cookies[settings.SESSION_COOKIE_NAME].value
    user_pk = get_user_model().objects.get(username=USERNAME).pk

    captured = []
    original = portal.render
    portal.render = lambda *args, **kwargs: (
        captured.append((args, kwargs)) or original(*args, **kwargs)
    )
    client.get(f"/patients/{ref}/")
    portal.render = original
    (request, template, context), kwargs = captured[0]

    def queries() -> None:
        Session.objects.get(session_key=session_key, expire_date__gt=timezone.now())
        get_user_model().objects.get(pk=user_pk)
        DemoPatient.objects.get(patient_id=patient.patient_id)

    blob = Session.objects.get(session_key=session_key).session_data
    store = import_module(settings.SESSION_ENGINE).SessionStore()
    user = get_user_model().objects.get(pk=user_pk)

    signed_in = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    signed_in.items()  # loaded once: the parts below read the user only

    class _Request:
        def __init__(self, session: object) -> None:
            self.session = session

    def conf_reads() -> None:
        for _ in range(10):
            conf.PATIENT_PASSIVE_PATH_PREFIXES  # noqa: B018 - the read is what is timed

    def connect() -> None:
        connection.ensure_connection()
        connection.close()

    def noop() -> None:
        pass

    def hops(count: int) -> Callable[[], None]:
        async def request() -> None:
            async with ThreadSensitiveContext():
                for _ in range(count):
                    await sync_to_async(noop)()

        return lambda: loop.run_until_complete(request())

    loop = asyncio.new_event_loop()
    steady_session = store.__class__(session_key)
    steady_session.items()  # loaded once: the load is the session middleware's, not theirs

    async def answer(request) -> HttpResponse:
        return HttpResponse("ok")

    async def auser() -> object:
        return user

    def patient_request() -> object:
        request = RequestFactory().get(f"/patients/{ref}/")
        request.session, request.user, request.auser = steady_session, user, auser
        return request

    chain = PatientSessionSecurityMiddleware(PatientSessionCleanupMiddleware(answer))

    def through(handler: Callable) -> Callable[[], None]:
        def run() -> None:
            hops_before = hop_count[0]
            SyncToAsync.__call__ = counting
            try:
                response = loop.run_until_complete(handler(patient_request()))
            finally:
                SyncToAsync.__call__ = original_call
            if response.status_code != 200:
                raise RuntimeError("the patient middlewares did not let the page through")
            if hop_count[0] != hops_before:
                raise RuntimeError("the patient middlewares made a thread hop")

        return run

    hop_count = [0]
    original_call = SyncToAsync.__call__

    async def counting(self, *args, **kwargs):
        hop_count[0] += 1
        return await original_call(self, *args, **kwargs)

    connection.ensure_connection()
    parts = {
        "patient middlewares (2)": through(chain),
        "... view alone": through(answer),
        "template": lambda: render(request, template, context, **kwargs),
        "connection (open + close)": connect,
        "session blob decode": lambda: store.decode(blob),
        "user's session hash": user.get_session_auth_hash,
        "conf reads (10)": conf_reads,
        "queries (3, connection open)": queries,
        "session row: the ORM's get": lambda: Session.objects.get(
            session_key=session_key, expire_date__gt=timezone.now()
        ),
        "session row: the engine's read": lambda: store.__class__(
            session_key
        )._get_session_from_db(),
        "user: Django's get_user": lambda: auth.get_user(_Request(signed_in)),
        "user: patient_data.rows": lambda: rows.verified_user(_Request(signed_in)),
        "request context, no hop": hops(0),
        "request context, 1 hop": hops(1),
        "request context, 5 hops": hops(5),
    }
    results = {}
    for name, run in parts.items():
        connection.ensure_connection()
        run()  # warm up
        results[name] = timed(run, options.repeat, options.rounds)
    loop.close()
    print(f"{'part':<34}{'wall us':>10}{'CPU us':>10}")
    for name, (wall, cpu) in results.items():
        print(f"{name:<34}{wall:>10.0f}{cpu:>10.0f}")
    own = results["patient middlewares (2)"][1] - results["... view alone"][1]
    print(f"the two patient middlewares' own CPU: {own:.0f} us per request (target <= 100)")
    base, one, five = (results[f"request context, {n}"][1] for n in ("no hop", "1 hop", "5 hops"))
    print(
        f"hop, CPU: the first (starts the request's thread) {one - base:.0f} us, "
        f"each further {(five - one) / 4:.0f} us"
    )
    print(f"rounds: {options.rounds} x {options.repeat} calls per part")


if __name__ == "__main__":
    main()
