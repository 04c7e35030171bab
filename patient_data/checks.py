"""System checks: misconfigurations of the patient-session protection fail at start-up."""

from __future__ import annotations

import sqlite3
from numbers import Real

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.core.checks.security import base as security_checks
from django.core.checks.security import csrf as csrf_checks
from django.test.utils import override_settings
from django.utils.module_loading import import_string

from patient_data.conf import conf
from patient_data.registry import META_KEY

SECURITY = "patient_data.middleware.patient_session_security.PatientSessionSecurityMiddleware"
CLEANUP = "patient_data.middleware.patient_session_security.PatientSessionCleanupMiddleware"
SESSION_MW = "patient_data.middleware.sessions.SessionMiddleware"
AUTH_MW = "patient_data.middleware.inline.AuthenticationMiddleware"
# The project's session and auth middlewares, or Django's own that they replace.
SESSION_MWS = (SESSION_MW, "django.contrib.sessions.middleware.SessionMiddleware")
AUTH_MWS = (AUTH_MW, "django.contrib.auth.middleware.AuthenticationMiddleware")
GUARDED_ENGINES = {
    f"patient_data.sessions.{name}"
    for name in ("db", "cached_db", "cache", "file", "signed_cookies")
}


def _positive(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and value > 0


@register(Tags.security)
def check_timeouts(app_configs=None, **kwargs) -> list:
    errors = []
    for name, check_id in (
        ("PATIENT_SESSION_TIMEOUT", "patient_data.E001"),
        ("PATIENT_MAX_INACTIVE_TIME", "patient_data.E002"),
        ("PATIENT_SESSION_MAX_AGE", "patient_data.E003"),
        ("PATIENT_SESSION_ABSOLUTE_MAX_AGE", "patient_data.E020"),
    ):
        if not _positive(getattr(conf, name)):
            errors.append(Error(f"{name} must be a positive number of minutes.", id=check_id))
    if errors:
        return errors
    if conf.PATIENT_MAX_INACTIVE_TIME < conf.PATIENT_SESSION_TIMEOUT:
        errors.append(
            Error(
                "PATIENT_MAX_INACTIVE_TIME is below PATIENT_SESSION_TIMEOUT: the session would "
                "end before its patient data times out.",
                hint="Set PATIENT_MAX_INACTIVE_TIME >= PATIENT_SESSION_TIMEOUT.",
                id="patient_data.E004",
            )
        )
    interval = conf.PATIENT_ACTIVITY_WRITE_INTERVAL
    if not (isinstance(interval, Real) and 0 <= interval < conf.PATIENT_SESSION_TIMEOUT * 60):
        errors.append(
            Error(
                "PATIENT_ACTIVITY_WRITE_INTERVAL must be >= 0 seconds and shorter than "
                "PATIENT_SESSION_TIMEOUT.",
                id="patient_data.E005",
            )
        )
    return errors


@register(Tags.security)
def check_middleware(app_configs=None, **kwargs) -> list:
    middleware = list(settings.MIDDLEWARE)
    errors = []
    for name, check_id in ((SECURITY, "patient_data.E006"), (CLEANUP, "patient_data.E007")):
        if name not in middleware:
            errors.append(Error(f"{name} is missing from MIDDLEWARE.", id=check_id))
            continue
        for required, accepted in ((SESSION_MW, SESSION_MWS), (AUTH_MW, AUTH_MWS)):
            found = [middleware.index(path) for path in accepted if path in middleware]
            if not found or min(found) > middleware.index(name):
                errors.append(
                    Error(
                        f"{name.rsplit('.', 1)[1]} must come after {required} in MIDDLEWARE.",
                        id="patient_data.E008",
                    )
                )
    return errors


@register(Tags.security)
def check_inline_middleware(app_configs=None, **kwargs) -> list:
    """E060 for each middleware adapted by ``patient_data.middleware.inline`` whose hooks
    would do I/O under the current settings."""
    errors = []
    for path in settings.MIDDLEWARE:
        refusal = getattr(import_string(path), "inline_refusal", None)
        if refusal is not None and (reason := refusal()):
            errors.append(
                Error(
                    f"{path} cannot run in the event loop: {reason}.",
                    hint=f"Change the setting, or use {import_string(path).adapts}.",
                    id="patient_data.E060",
                )
            )
    return errors


#: Django's deploy checks that find its middleware by dotted path. Run as they are, they do not
#: see the inline adapter's subclasses: they would skip what depends on the middleware (HSTS,
#: SSL redirect, nosniff, referrer policy, secure CSRF cookie, ...).
PATH_GATED_DEPLOY_CHECKS = (
    security_checks.check_sts,
    security_checks.check_sts_include_subdomains,
    security_checks.check_sts_preload,
    security_checks.check_content_type_nosniff,
    security_checks.check_ssl_redirect,
    security_checks.check_xframe_deny,
    security_checks.check_referrer_policy,
    security_checks.check_cross_origin_opener_policy,
    csrf_checks.check_csrf_cookie_secure,
)
#: Django's "middleware missing" warnings (security.W001-W003, silenced in the settings: they
#: call the inline subclasses missing), given again by path *or* subclass.
REQUIRED_MIDDLEWARE = (
    ("django.middleware.security.SecurityMiddleware", "patient_data.W061"),
    ("django.middleware.clickjacking.XFrameOptionsMiddleware", "patient_data.W062"),
    ("django.middleware.csrf.CsrfViewMiddleware", "patient_data.W063"),
)


def _as_django_paths(middleware: list[str]) -> list[str]:
    return [getattr(import_string(path), "adapts", path) for path in middleware]


@register(Tags.security, deploy=True)
def check_required_middleware(app_configs=None, **kwargs) -> list:
    """W061-W063: Django's security, clickjacking and CSRF middleware, or their inline
    subclasses, are in MIDDLEWARE."""
    present = set(_as_django_paths(list(settings.MIDDLEWARE)))
    return [
        Warning(
            f"{path} is not in MIDDLEWARE (neither Django's class nor its inline subclass).",
            id=check_id,
        )
        for path, check_id in REQUIRED_MIDDLEWARE
        if path not in present
    ]


@register(Tags.security, deploy=True)
def check_deploy_through_inline_middleware(app_configs=None, **kwargs) -> list:
    """Django's path-gated deploy checks, run as if each inline class were the class it adapts
    (what Django reports for its own classes is not repeated)."""
    middleware = list(settings.MIDDLEWARE)
    adapted = _as_django_paths(middleware)
    if adapted == middleware:
        return []
    found = []
    for check in PATH_GATED_DEPLOY_CHECKS:
        own = {message.id for message in check(app_configs)}
        with override_settings(MIDDLEWARE=adapted):
            found += [message for message in check(app_configs) if message.id not in own]
    return found


@register(Tags.security)
def check_registry(app_configs=None, **kwargs) -> list:
    errors = []
    for key in conf.PATIENT_SESSION_KEYS:
        if not isinstance(key, str) or not key or key == META_KEY:
            errors.append(
                Error(
                    f"PATIENT_SESSION_KEYS holds an invalid key: {key!r}.", id="patient_data.E009"
                )
            )
    for prefix in conf.PATIENT_SESSION_KEY_PREFIXES:
        if not isinstance(prefix, str) or len(prefix) < 3 or META_KEY.startswith(prefix):
            errors.append(
                Error(
                    f"PATIENT_SESSION_KEY_PREFIXES holds an unusable prefix: {prefix!r}.",
                    hint="A prefix needs at least 3 characters and may not cover internal keys.",
                    id="patient_data.E010",
                )
            )
    return errors


@register(Tags.security)
def check_sessions(app_configs=None, **kwargs) -> list:
    warnings = []
    if settings.SESSION_ENGINE not in GUARDED_ENGINES:
        warnings.append(
            Warning(
                f"SESSION_ENGINE {settings.SESSION_ENGINE!r} has no no-resurrection guard: a "
                "request that started before a cleanup can write patient data back.",
                hint="Use one of patient_data.sessions.{db,cached_db,cache,file,signed_cookies}.",
                id="patient_data.W001",
            )
        )
    if getattr(settings, "SESSION_SAVE_EVERY_REQUEST", False):
        warnings.append(
            Warning(
                "SESSION_SAVE_EVERY_REQUEST rewrites every session on every request; activity "
                "is already recorded at most once per PATIENT_ACTIVITY_WRITE_INTERVAL.",
                id="patient_data.W002",
            )
        )
    warnings.extend(sqlite_warnings(settings.DATABASES))
    warnings.extend(per_process_cache_warnings())
    return warnings


def per_process_cache_warnings() -> list:
    """W020 when sessions live in a local-memory cache: each server process has its own."""
    if settings.SESSION_ENGINE not in {
        "patient_data.sessions.cache",
        "patient_data.sessions.cached_db",
    }:
        return []
    alias = getattr(settings, "SESSION_CACHE_ALIAS", "default")
    backend = settings.CACHES.get(alias, {}).get("BACKEND", "")
    if not backend.endswith(".LocMemCache"):
        return []
    return [
        Warning(
            f"SESSION_ENGINE {settings.SESSION_ENGINE!r} on a local-memory cache: every server "
            "process keeps its own copies, so a logout or bulk cleanup in one process does "
            "not reach another's (such copies are checked on load and logged out, never "
            "served with patient data; with the cache engine other processes do not see the "
            "session at all).",
            hint="Set REDIS_URL (a shared Redis cache), or use patient_data.sessions.db; "
            "keep a local-memory cache to one process (startup_with_cleanup.py --workers 1).",
            id="patient_data.W020",
        )
    ]


@register(Tags.security)
def check_databases(app_configs=None, **kwargs) -> list:
    return database_errors(settings.DATABASES, sqlite3.sqlite_version_info)


def database_errors(databases: dict, sqlite_version: tuple[int, ...]) -> list:
    """E011 for each database the guard and the bulk commands cannot work on: they need
    ``INSERT ... ON CONFLICT ... RETURNING`` (PostgreSQL, SQLite >= 3.35)."""
    errors = []
    for alias, database in databases.items():
        engine = database.get("ENGINE", "")
        if engine.endswith("sqlite3") and sqlite_version >= (3, 35):
            continue
        if engine.endswith(("postgresql", "postgis")):
            continue
        found = (
            f"SQLite {'.'.join(map(str, sqlite_version))}" if engine.endswith("sqlite3") else engine
        )
        errors.append(
            Error(
                f"Database {alias!r} ({found}) cannot hold the cleanup generations and the bulk "
                "cleanup: they need INSERT ... ON CONFLICT ... RETURNING.",
                hint="Use PostgreSQL, or SQLite 3.35 or newer.",
                id="patient_data.E011",
            )
        )
    return errors


def sqlite_warnings(databases: dict) -> list:
    """W003 for each SQLite database whose transactions would not serialise the guard."""
    warnings = []
    for alias, database in databases.items():
        options = database.get("OPTIONS", {})
        mode = str(options.get("transaction_mode", "")).upper()
        if database.get("ENGINE", "").endswith("sqlite3") and mode not in {
            "IMMEDIATE",
            "EXCLUSIVE",
        }:
            warnings.append(
                Warning(
                    f"SQLite database {alias!r} does not use IMMEDIATE transactions: the "
                    "cleanup-generation lock cannot serialise concurrent writers.",
                    hint="Set OPTIONS['transaction_mode'] = 'IMMEDIATE'.",
                    id="patient_data.W003",
                )
            )
    return warnings


def _seconds(name: str, check_id: str, *, zero: bool = False) -> list:
    value = getattr(conf, name)
    valid = isinstance(value, Real) and not isinstance(value, bool)
    if valid and (value >= 0 if zero else value > 0):
        return []
    wanted = "0 or more" if zero else "a positive number of"
    return [Error(f"{name} must be {wanted} seconds.", id=check_id)]


@register(Tags.security)
def check_live(app_configs=None, **kwargs) -> list:
    """The live side's settings: warnings, grace, heartbeats, the socket rate limit."""
    errors = _seconds("PATIENT_TIMEOUT_WARNING", "patient_data.E030", zero=True)
    if not errors and _positive(conf.PATIENT_SESSION_TIMEOUT):
        if conf.PATIENT_TIMEOUT_WARNING >= conf.PATIENT_SESSION_TIMEOUT * 60:
            errors.append(
                Error(
                    "PATIENT_TIMEOUT_WARNING is not shorter than PATIENT_SESSION_TIMEOUT: the "
                    "page would be warned before any activity could count.",
                    id="patient_data.E031",
                )
            )
    errors += _seconds("PATIENT_DISCONNECT_GRACE", "patient_data.E032")
    errors += _seconds("PATIENT_PRESENCE_HEARTBEAT", "patient_data.E033")
    try:
        frames, seconds = conf.PATIENT_SOCKET_RATE_LIMIT
        valid = isinstance(frames, int) and frames > 0 and _positive(seconds)
    except (TypeError, ValueError):
        valid = False
    if not valid:
        errors.append(
            Error(
                "PATIENT_SOCKET_RATE_LIMIT must be (frames, seconds), both positive.",
                hint="e.g. (20, 10): 20 frames per socket per 10 seconds.",
                id="patient_data.E034",
            )
        )
    return errors


@register(Tags.security)
def check_channel_layer(app_configs=None, **kwargs) -> list:
    """W030: several processes cannot share the in-memory channel layer."""
    backend = settings.CHANNEL_LAYERS.get("default", {}).get("BACKEND", "")
    if conf.NCP_WORKERS > 1 and backend.endswith("InMemoryChannelLayer"):
        return [
            Warning(
                f"NCP_WORKERS is {conf.NCP_WORKERS} with the in-memory channel layer: each "
                "process would see only its own sockets, so cleanups, logouts and timeouts "
                "would not reach the pages connected to another process.",
                hint="Set REDIS_URL (channels-redis) or run one process.",
                id="patient_data.W030",
            )
        ]
    return []


@register(Tags.security)
def check_cleanup_rate_limits(app_configs=None, **kwargs) -> list:
    errors = []
    if not _positive(conf.PATIENT_CLEANUP_RATE_WINDOW):
        errors.append(
            Error(
                "PATIENT_CLEANUP_RATE_WINDOW must be a positive number of seconds.",
                id="patient_data.E040",
            )
        )
    for name in ("PATIENT_CLEANUP_RATE_PER_SESSION", "PATIENT_CLEANUP_RATE_PER_ADDRESS"):
        value = getattr(conf, name)
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            errors.append(
                Error(
                    f"{name} must be a whole number >= 0 (0 turns the limit off).",
                    id="patient_data.E041",
                )
            )
    return errors


@register(Tags.security)
def check_page_timers(app_configs=None, **kwargs) -> list:
    """E050: the page's hidden-tab timer is a number of seconds, 0 meaning off."""
    return _seconds("PATIENT_HIDDEN_TIMEOUT", "patient_data.E050", zero=True)


def _pools(databases: dict) -> list[tuple[str, dict, dict]]:
    """(alias, settings, pool options) of every database with a connection pool."""
    found = []
    for alias, database in databases.items():
        pool = (database.get("OPTIONS") or {}).get("pool")
        if pool:
            found.append((alias, database, pool if isinstance(pool, dict) else {}))
    return found


@register()  # not Tags.database: Django runs those only when asked for (migrate, --database)
def check_database_pool(app_configs=None, **kwargs) -> list:
    """E070-E072: a PostgreSQL connection pool Django would refuse only at the first request
    (every request then failing), or one that cannot hand out a connection."""
    return pool_errors(settings.DATABASES)


def pool_errors(databases: dict) -> list:
    """The E070-E072 errors of ``databases`` (a ``DATABASES`` setting)."""
    errors = []
    for alias, database, pool in _pools(databases):
        if database.get("CONN_MAX_AGE", 0) != 0:
            errors.append(
                Error(
                    f"DATABASES[{alias!r}] has a connection pool and CONN_MAX_AGE="
                    f"{database.get('CONN_MAX_AGE')!r}: Django refuses persistent connections "
                    "with a pool, at the first query of every request.",
                    hint="Drop conn_max_age from DATABASE_URL, or set DATABASE_POOL_MAX_SIZE=0.",
                    id="patient_data.E070",
                )
            )
        try:
            import psycopg_pool  # noqa: F401
        except ImportError:
            errors.append(
                Error(
                    f"DATABASES[{alias!r}] has a connection pool but psycopg_pool is not "
                    "installed.",
                    hint="Install psycopg[pool] (requirements.txt), or DATABASE_POOL_MAX_SIZE=0.",
                    id="patient_data.E071",
                )
            )
        size, timeout = pool.get("max_size", 1), pool.get("timeout", 30)
        if not (_positive(size) and _positive(timeout)):
            errors.append(
                Error(
                    f"DATABASES[{alias!r}]: the pool's max_size ({size!r}) and timeout "
                    f"({timeout!r} s) must be positive.",
                    hint="DATABASE_POOL_MAX_SIZE >= 1 (0: no pool), DATABASE_POOL_TIMEOUT > 0.",
                    id="patient_data.E072",
                )
            )
    return errors
