"""Request cost of three middleware stacks, measured side by side in one run.

    .venv/bin/python bench/request_overhead.py

The request is a steady-state patient page (``/patients/<ref>/`` of a logged-in clinician
whose session holds patient data: no data change, no activity write due). The stacks:

- ``stock``: Django's own middleware classes (``bench.settings_stock``), every hook through
  ``sync_to_async`` under ASGI, with the patient middlewares;
- ``ours``: the project's settings (the inline adapter, the async session middleware);
- ``ours-bare``: ours without the two patient middlewares
  (``bench.settings_without_patient_middleware``).

(a) requests/s of one daphne process per stack on 127.0.0.1; rounds rotate which server goes
first, so drifting machine load hits all alike.
(b) the same request through Django's ASGI handler in this process, no network, interleaved
the same way, plus three synthetic stacks, ours with some ``sync_to_async`` calls run in the
event loop's thread instead of a worker thread:

- ``floor``: every call inline (Django's own included): no thread hop at all. What no
  middleware can remove is left: the queries, the template, the handler. ``stock / floor`` is
  the most that removing thread hops could ever gain;
- ``django-min``: only the hops Django itself needs kept: the handler's two
  (``request_started``, closing the response: the first starts the request's worker thread)
  and one to reach the ORM (the session's load, which reads the user too); the patient query
  inline. ``stock / django-min`` is the most any stack can gain without changing Django.
  Ours makes the same hops (it reads the patient row in the session's load), so
  ``ours / django-min`` is what our stack costs beyond Django's own hops;
- ``handler-only``: only the handler's two hops kept, every query inline.

And ``ours-patient-hop``: ours as before the view's patient row was read in the session's
load hop (``patient_data.prefetch`` off: the patient row in a hop of its own), for a
before/after ratio measured side by side.

It works on a throw-away SQLite database (synthetic demo data) in a temporary NCP_VAR_DIR,
ignoring DATABASE_URL / REDIS_URL, and only ever talks to 127.0.0.1. Every loop is bounded
by a count and by ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import re
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
FULL = "ncp_asgi.settings"
STACKS = {
    "stock": "bench.settings_stock",
    "ours": FULL,
    "ours-bare": "bench.settings_without_patient_middleware",
}
USERNAME = "clinician"
FLOOR = "floor"
HANDLER_HOPS = frozenset({"Signal.asend.<locals>.sync_send", "HttpResponseBase.close"})
SESSION_HOP = "GuardedSessionMixin._load_with_companions"
SEPARATE_PATIENT_HOP = "ours-patient-hop"
#: Synthetic stacks (in-process only): ours, with only the named hops kept as thread hops.
SYNTHETIC = {
    FLOOR: frozenset(),
    "django-min": HANDLER_HOPS | {SESSION_HOP},
    "handler-only": HANDLER_HOPS,
}
TARGET_SPEEDUP = 1.5  # ours against stock
TARGET_PATIENT_COST_US = 100  # ours minus ours-bare, in-process
DEPLOYMENT_VARIABLES = {"DATABASE_URL", "REDIS_URL", "SESSION_ENGINE", "SESSION_FILE_PATH"}
CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


@dataclass
class Sample:
    """Timings of one stack: (requests, wall seconds, CPU seconds of the server) per round."""

    label: str
    rounds: list[tuple[int, float, float]] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return sum(n for n, _, _ in self.rounds) / sum(s for _, s, _ in self.rounds)

    @property
    def median_per_second(self) -> float:
        return statistics.median(n / s for n, s, _ in self.rounds)

    @property
    def micros_per_request(self) -> float:
        return 1e6 / self.per_second

    @property
    def cpu_micros_per_request(self) -> float:
        """The median over rounds: CPU time is what a shared machine's load disturbs least."""
        return statistics.median(1e6 * cpu / n for n, _, cpu in self.rounds)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_env(var_dir: str, password: str) -> dict[str, str]:
    # Always the embedded default on a throw-away directory: never a configured real database.
    env = {k: v for k, v in os.environ.items() if k not in DEPLOYMENT_VARIABLES}
    env.update(
        NCP_VAR_DIR=var_dir,
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(48),
        SECURE_COOKIES="0",
        PATIENT_LOG_LEVEL="WARNING",
        PYTHONPATH=str(ROOT),
        BENCH_PASSWORD=password,
    )
    return env


def prepare_database(env: dict[str, str]) -> None:
    manage = [sys.executable, str(ROOT / "manage.py")]
    run = {"cwd": ROOT, "env": {**env, "DJANGO_SETTINGS_MODULE": FULL}, "check": True}
    subprocess.run([*manage, "migrate", "-v0"], **run, timeout=120)
    password = env["BENCH_PASSWORD"]
    seed = ["seed_demo", "--patients", "5", "--password", password, "--staff-password", password]
    subprocess.run([*manage, *seed], **run, timeout=120, stdout=subprocess.DEVNULL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def start_daphne(settings_module: str, env: dict[str, str], log: Path) -> tuple:
    port = free_port()
    command = [sys.executable, "-m", "daphne", "-b", HOST, "-p", str(port)]
    process = subprocess.Popen(
        [*command, "ncp_asgi.asgi:application"],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": settings_module},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"daphne ({settings_module}) exited; see {log}")
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return process, port
        except OSError:
            time.sleep(0.2)
    process.terminate()
    raise RuntimeError(f"daphne ({settings_module}) did not start within 30 s; see {log}")


class Browser:
    """Cookies and one keep-alive connection to one local server."""

    def __init__(self, port: int, cookies: dict[str, str] | None = None) -> None:
        self.port = port
        self.cookies = dict(cookies or {})
        self.connection = http.client.HTTPConnection(HOST, port, timeout=10)

    def request(self, method: str, path: str, body: str | None = None) -> tuple[int, dict, bytes]:
        headers = {"Host": f"{HOST}:{self.port}"}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        self.connection.request(method, path, body=body, headers=headers)
        response = self.connection.getresponse()
        content = response.read()
        for header in response.headers.get_all("Set-Cookie") or []:
            for name, morsel in SimpleCookie(header).items():
                self.cookies[name] = morsel.value
        return response.status, dict(response.headers), content

    def login(self, password: str) -> None:
        status, _, page = self.request("GET", "/accounts/login/")
        token = CSRF_INPUT.search(page.decode())
        if status != 200 or token is None:
            raise RuntimeError(f"login page: HTTP {status}")
        form = {"csrfmiddlewaretoken": token.group(1), "username": USERNAME, "password": password}
        status, headers, _ = self.request("POST", "/accounts/login/", urlencode(form))
        if status != 302 or headers.get("Location") != "/patients/":
            raise RuntimeError(f"login failed: HTTP {status}")

    def close(self) -> None:
        self.connection.close()


def first_patient_path(browser: Browser) -> str:
    """Search as the page does (a POST with the CSRF token); the first result's address."""
    status, _, page = browser.request("GET", "/patients/")
    token = CSRF_INPUT.search(page.decode())
    if status != 200 or token is None:
        raise RuntimeError(f"patient search page: HTTP {status}")
    form = {"csrfmiddlewaretoken": token.group(1), "patient_id": "SYN-"}
    status, _, _ = browser.request("POST", "/patients/", urlencode(form))
    _, _, page = browser.request("GET", "/patients/")
    found = re.search(r'href="(/patients/[0-9a-f]{32}/)"', page.decode())
    if status != 302 or found is None:
        raise RuntimeError(f"patient search: HTTP {status}")
    return found.group(1)


def hammer(port: int, cookies: dict[str, str], path: str, requests: int, connections: int) -> float:
    """``requests`` GETs over ``connections`` keep-alive connections; returns the wall time."""
    barrier = threading.Barrier(connections + 1)
    failures: list[str] = []

    def worker(count: int) -> None:
        browser = Browser(port, cookies)
        try:
            browser.request("GET", path)  # connect and warm up outside the timing
            barrier.wait(timeout=30)
            for _ in range(count):
                status, _, _ = browser.request("GET", path)
                if status != 200:
                    failures.append(f"HTTP {status}")
                    return
        except (OSError, http.client.HTTPException, threading.BrokenBarrierError) as exc:
            failures.append(type(exc).__name__)
        finally:
            browser.close()

    share = requests // connections
    threads = [threading.Thread(target=worker, args=(share,)) for _ in range(connections)]
    for thread in threads:
        thread.start()
    barrier.wait(timeout=30)
    start = time.perf_counter()
    for thread in threads:
        thread.join(timeout=120)
    elapsed = time.perf_counter() - start
    if failures or any(thread.is_alive() for thread in threads):
        raise RuntimeError(f"benchmark requests failed: {sorted(set(failures))}")
    return elapsed


def interleaved(
    samples: list[Sample],
    measure: Callable[[Sample], tuple[int, float, float]],
    rounds: int,
    until: float,
) -> None:
    """Run ``measure`` for every sample in rounds, rotating the order; stop at ``until``."""
    for number in range(rounds):
        if time.monotonic() > until:
            print(f"  time limit reached after {number} rounds", flush=True)
            return
        shift = number % len(samples)
        for sample in samples[shift:] + samples[:shift]:
            sample.rounds.append(measure(sample))


def over_daphne(env: dict[str, str], options: argparse.Namespace, until: float) -> list[Sample]:
    logs = Path(env["NCP_VAR_DIR"])
    servers = {
        label: start_daphne(module, env, logs / f"daphne-{label}.log")
        for label, module in STACKS.items()
    }
    try:
        targets = {}
        for label, (_, port) in servers.items():
            browser = Browser(port)
            browser.login(env["BENCH_PASSWORD"])
            path = first_patient_path(browser)
            status, headers, _ = browser.request("GET", path)
            shows_headers = headers.get("X-Patient-Data-Page") == "true"
            if status != 200 or shows_headers != (label != "ours-bare"):
                raise RuntimeError(f"{label} server does not run the expected stack")
            targets[label] = (port, browser.cookies, path)
            browser.close()
        samples = [Sample(label) for label in STACKS]

        def measure(sample: Sample) -> tuple[int, float, float]:
            port, cookies, path = targets[sample.label]
            pid = servers[sample.label][0].pid
            count = options.requests - options.requests % options.connections
            cpu = process_cpu_seconds(pid)
            wall = hammer(port, cookies, path, count, options.connections)
            return count, wall, process_cpu_seconds(pid) - cpu

        interleaved(samples, measure, options.rounds, until)
        return samples
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(timeout=10)


def asgi_scope(path: str, cookie: str) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", HOST.encode()), (b"cookie", cookie.encode())],
        "client": (HOST, 50000),
        "server": (HOST, 80),
    }


async def asgi_get(app: Callable, scope: dict) -> int:
    """One request through an ASGI app; returns the status."""
    sent: list[dict] = []
    request = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict:
        if request:
            return request.pop()
        await asyncio.Event().wait()  # never disconnects: Django cancels this listener
        return {}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"]


@contextmanager
def without_thread_hops(keep: frozenset[str] = frozenset()) -> Iterator[None]:
    """Every ``sync_to_async`` call runs in the calling thread, except those of the functions
    named (``__qualname__``) in ``keep``: a synthetic stack with only those hops."""
    from asgiref.sync import SyncToAsync
    from django.db.backends.base.base import BaseDatabaseWrapper

    original, check = SyncToAsync.__call__, BaseDatabaseWrapper.validate_thread_sharing

    async def in_this_thread(self, *args, **kwargs):
        func = getattr(self.func, "__func__", self.func)
        if getattr(func, "__qualname__", None) in keep:
            return await original(self, *args, **kwargs)
        return self.func(*args, **kwargs)

    SyncToAsync.__call__ = in_this_thread
    # A connection opened by a kept hop is used by the inline calls in the loop's thread.
    BaseDatabaseWrapper.validate_thread_sharing = lambda self: None
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        yield
    finally:
        SyncToAsync.__call__ = original
        BaseDatabaseWrapper.validate_thread_sharing = check
        del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]


@contextmanager
def patient_in_its_own_hop() -> Iterator[None]:
    """Ours as before: the session's load does not read the view's patient row."""
    from patient_data import prefetch

    prefetch._declared = False
    try:
        yield
    finally:
        prefetch._declared = True


def in_process(env: dict[str, str], options: argparse.Namespace, until: float) -> list[Sample]:
    """The same request through Django's ASGI handler (built per stack), no network."""
    os.environ.update({**env, "DJANGO_SETTINGS_MODULE": FULL})
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from importlib import import_module

    from django.conf import settings
    from django.core.handlers.asgi import ASGIHandler
    from django.test import Client, RequestFactory, override_settings

    from patient_data.models import DemoPatient

    # The handler builds its middleware chain once, when it is created.
    apps = {}
    for label, module in STACKS.items():
        with override_settings(MIDDLEWARE=import_module(module).MIDDLEWARE):
            apps[label] = ASGIHandler()
    for label in (*SYNTHETIC, SEPARATE_PATIENT_HOP):
        apps[label] = ASGIHandler()
    patient = DemoPatient.objects.order_by("patient_id").first()
    scopes = {}
    for label in apps:
        client = Client(HTTP_HOST=HOST)
        if not client.login(
            request=RequestFactory().post("/accounts/login/"),
            username=USERNAME,
            password=env["BENCH_PASSWORD"],
        ):
            raise RuntimeError("in-process login failed")
        client.post("/patients/", {"patient_id": patient.patient_id})  # the search comes first
        session_key = client.cookies[settings.SESSION_COOKIE_NAME].value
        cookie = f"{settings.SESSION_COOKIE_NAME}={session_key}"
        ref = client.session["patient_search_results"][0]["ref"]  # random per search
        scopes[label] = asgi_scope(f"/patients/{ref}/", cookie)

    async def repeat(label: str, count: int) -> None:
        for _ in range(count):
            if await asgi_get(apps[label], scopes[label]) != 200:
                raise RuntimeError(f"in-process {label}: unexpected status")

    loop = asyncio.new_event_loop()
    try:
        for label in apps:  # first session load, template compilation
            loop.run_until_complete(repeat(label, 20))

        def measure(sample: Sample) -> tuple[int, float, float]:
            keep = SYNTHETIC.get(sample.label)
            hops = nullcontext() if keep is None else without_thread_hops(keep)
            if sample.label == SEPARATE_PATIENT_HOP:
                hops = patient_in_its_own_hop()
            with hops:
                start, cpu = time.perf_counter(), time.process_time()
                loop.run_until_complete(repeat(sample.label, options.inprocess))
                wall = time.perf_counter() - start
                return options.inprocess, wall, time.process_time() - cpu

        samples = [Sample(label) for label in apps]
        interleaved(samples, measure, options.rounds, until)
        return samples
    finally:
        loop.close()


def report(network: list[Sample], local: list[Sample], options: argparse.Namespace) -> None:
    net = {sample.label: sample for sample in network}
    loc = {sample.label: sample for sample in local}
    print()
    print(
        f"{'stack':<12}{'daphne req/s':>14}{'(median)':>10}{'server CPU us/req':>19}"
        f"{'in-process us/req':>19}{'CPU us/req':>12}"
    )
    for label in STACKS:
        print(
            f"{label:<12}{net[label].per_second:>14.1f}{net[label].median_per_second:>10.1f}"
            f"{net[label].cpu_micros_per_request:>19.0f}{loc[label].micros_per_request:>19.0f}"
            f"{loc[label].cpu_micros_per_request:>12.0f}"
        )
    speedups = {
        "daphne req/s": net["ours"].per_second / net["stock"].per_second,
        "daphne server CPU": net["stock"].cpu_micros_per_request
        / net["ours"].cpu_micros_per_request,
        "in-process wall": loc["ours"].per_second / loc["stock"].per_second,
        "in-process CPU": loc["stock"].cpu_micros_per_request / loc["ours"].cpu_micros_per_request,
    }
    print("ours against stock: " + ", ".join(f"{k} {v:.2f}x" for k, v in speedups.items()))
    meaning = {
        FLOOR: "no thread hop at all: the most hop removal can gain",
        "django-min": "only Django's own hops (handler 2, ORM 1): the most without changing Django",
        "handler-only": "only the handler's 2 hops, queries inline",
    }
    before = loc[SEPARATE_PATIENT_HOP]
    print(
        f"{SEPARATE_PATIENT_HOP} (in-process): {before.micros_per_request:.0f} us wall, "
        f"{before.cpu_micros_per_request:.0f} us CPU per request; ours against it "
        f"{before.cpu_micros_per_request / loc['ours'].cpu_micros_per_request:.2f}x CPU; "
        f"stock/{SEPARATE_PATIENT_HOP} "
        f"{loc['stock'].cpu_micros_per_request / before.cpu_micros_per_request:.2f}x CPU"
    )
    for label in SYNTHETIC:
        synthetic = loc[label]
        print(
            f"{label} (in-process): {synthetic.micros_per_request:.0f} us wall, "
            f"{synthetic.cpu_micros_per_request:.0f} us CPU per request; stock/{label} "
            f"{loc['stock'].cpu_micros_per_request / synthetic.cpu_micros_per_request:.2f}x CPU, "
            f"{synthetic.per_second / loc['stock'].per_second:.2f}x wall ({meaning[label]})"
        )
    cost = loc["ours"].cpu_micros_per_request - loc["ours-bare"].cpu_micros_per_request
    wall_cost = loc["ours"].micros_per_request - loc["ours-bare"].micros_per_request
    print(
        f"in-process cost of the two patient middlewares: {cost:+.0f} us CPU "
        f"({wall_cost:+.0f} us wall) per request"
    )
    print(
        f"rounds: daphne {len(net['ours'].rounds)} x {options.requests} requests over "
        f"{options.connections} connections per stack; in-process {len(loc['ours'].rounds)} x "
        f"{options.inprocess} requests per stack"
    )
    # CPU per request decides: on a shared machine wall time mostly measures the neighbours.
    # In-process is the middleware stacks alone; over daphne, daphne's own per-request work
    # (the same for every stack) dilutes the ratio.
    for where in ("in-process CPU", "daphne server CPU"):
        speed = "meets" if speedups[where] >= TARGET_SPEEDUP else "MISSES"
        print(f"target ours >= {TARGET_SPEEDUP}x stock ({where} per request): {speed}")
    within = "meets" if cost <= TARGET_PATIENT_COST_US else "MISSES"
    print(f"target patient middlewares <= {TARGET_PATIENT_COST_US} us CPU: {within}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6, help="rounds per measurement (6)")
    parser.add_argument("--requests", type=int, default=300, help="daphne requests per round")
    parser.add_argument("--connections", type=int, default=4, help="keep-alive connections")
    parser.add_argument("--inprocess", type=int, default=300, help="in-process requests/round")
    parser.add_argument("--max-seconds", type=float, default=300, help="time limit per part")
    options = parser.parse_args()
    if not (1 <= options.connections <= options.requests and options.rounds >= 1):
        parser.error("need rounds >= 1 and 1 <= connections <= requests")

    with tempfile.TemporaryDirectory(prefix="ncp-bench-") as var_dir:
        env = bench_env(var_dir, secrets.token_urlsafe(16))
        print("Preparing a throw-away database with synthetic demo data...", flush=True)
        prepare_database(env)
        print("(a) daphne, stock / ours / ours-bare...", flush=True)
        network = over_daphne(env, options, time.monotonic() + options.max_seconds)
        print("(b) in-process ASGI handler, stock / ours / ours-bare...", flush=True)
        local = in_process(env, options, time.monotonic() + options.max_seconds)
        report(network, local, options)


if __name__ == "__main__":
    main()
