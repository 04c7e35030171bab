"""Settings for the NCP portal: everything deployment-specific comes from the environment.

With nothing set this is production behaviour (DEBUG off, SECRET_KEY required) on the embedded
default (SQLite under var/, in-memory channel layer). The local demo (``make run``) turns
development mode on explicitly with DEBUG=1, which also accepts a generated local key kept in
var/. DATABASE_URL switches to PostgreSQL, REDIS_URL to channels-redis and a Redis cache.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from ncp_asgi.env import (
    database_from_url,
    env_bool,
    env_gc_thresholds,
    env_list,
    env_number,
    local_secret_key,
    packaged_bootstrap_dir,
    postgres_pool,
    sqlite_database,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("NCP_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)

# Fail closed: a deployment that forgets a variable gets production behaviour, never the
# technical error pages (which would show session content).
DEBUG = env_bool("DEBUG", False)

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY and DEBUG:
    SECRET_KEY = local_secret_key(VAR_DIR / "secret_key")
# Published keys: the development key this repository once shipped, and Django's placeholder.
PUBLIC_SECRET_KEYS = ("dev-only-insecure-key-do-not-use-in-production-0123456789abcdef",)
if not DEBUG and (
    len(SECRET_KEY) < 50
    or SECRET_KEY in PUBLIC_SECRET_KEYS
    or SECRET_KEY.startswith("django-insecure")
):
    raise ImproperlyConfigured(
        "DEBUG is off (the default): set SECRET_KEY (at least 50 random characters, never a "
        "published development key) in the environment, or DEBUG=1 for local development."
    )

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",  # ASGI runserver; must precede staticfiles (daphne.E001)
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "patient_data",
    "monitor",
    "axes",
]

# Django's middlewares, adapted to run without thread hops under ASGI (patient_data.middleware
# .inline, .sessions: same classes and behaviour; check patient_data.E060 guards the adapter).
MIDDLEWARE = [
    "patient_data.middleware.inline.SecurityMiddleware",
    "patient_data.middleware.sessions.SessionMiddleware",
    "patient_data.middleware.inline.CommonMiddleware",
    "patient_data.middleware.inline.CsrfViewMiddleware",
    "patient_data.middleware.inline.AuthenticationMiddleware",
    "patient_data.middleware.patient_session_security.PatientSessionSecurityMiddleware",
    "patient_data.middleware.patient_session_security.PatientSessionCleanupMiddleware",
    "patient_data.middleware.inline.MessageMiddleware",
    "patient_data.middleware.inline.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last: turns a lockout into its 429 answer
]
# Cookie storage keeps the messages middleware free of session I/O (E060).
MESSAGE_STORAGE = "django.contrib.messages.storage.cookie.CookieStorage"

ROOT_URLCONF = "ncp_asgi.urls"
ASGI_APPLICATION = "ncp_asgi.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASE_URL = os.environ.get("DATABASE_URL", "")
# PostgreSQL connections per process (Django's psycopg pool; 0: no pool, one connection per
# request thread, unbounded): requests wait up to DATABASE_POOL_TIMEOUT s for one, then get
# a 503. An HTTP request holds one only while a hop of its uses it (request_threads.py).
# Keep NCP_WORKERS x DATABASE_POOL_MAX_SIZE below the server's max_connections.
DATABASE_POOL_MAX_SIZE = int(env_number("DATABASE_POOL_MAX_SIZE", 20, integer=True))
DATABASE_POOL_TIMEOUT = env_number("DATABASE_POOL_TIMEOUT", 10.0)
DATABASES = {
    "default": database_from_url(
        DATABASE_URL,
        BASE_DIR,
        pool=postgres_pool(DATABASE_POOL_MAX_SIZE, DATABASE_POOL_TIMEOUT),
    )
    if DATABASE_URL
    else sqlite_database(VAR_DIR / "db.sqlite3")
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL", "")
REDIS_PREFIX = os.environ.get("NCP_REDIS_PREFIX", "ncp")  # presence keys: <prefix>:presence:*
if REDIS_URL:
    # redis-py >= 8 defaults socket_timeout to 5 s, which kills channels-redis' blocking
    # BZPOPMIN on an idle socket (django/channels_redis#422): no read timeout on the layer.
    CHANNEL_LAYERS = {
        "default": {
            # A pool that makes a burst of a thousand sockets wait for a connection instead
            # of failing (TRAPS.md, bench/live.py).
            "BACKEND": "monitor.layers.BlockingPoolRedisChannelLayer",
            "CONFIG": {
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "socket_timeout": None,
                        "max_connections": 200,
                        "timeout": 20,
                    }
                ],
                "capacity": 1000,
                "group_expiry": 600,
                "prefix": os.environ.get("NCP_REDIS_PREFIX", "ncp"),
            },
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": os.environ.get("NCP_REDIS_PREFIX", "ncp"),
            "OPTIONS": {
                "socket_timeout": 5,
                "socket_connect_timeout": 2,
                # One pool per process, not one per request (ncp_asgi/redis_pool.py).
                "pool_class": "ncp_asgi.redis_pool.SharedConnectionPool",
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# Sessions go through a guarded engine so a request that loaded the session before a
# cleanup cannot write the patient data back (patient_data.guard).
SESSION_ENGINE = os.environ.get("SESSION_ENGINE", "patient_data.sessions.db")
SESSION_FILE_PATH = os.environ.get("SESSION_FILE_PATH", str(VAR_DIR / "sessions"))
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = 12 * 60 * 60
SESSION_SAVE_EVERY_REQUEST = False
# Shared workstations: the next person to open the browser must not inherit the session.
SESSION_EXPIRE_AT_BROWSER_CLOSE = env_bool("SESSION_EXPIRE_AT_BROWSER_CLOSE", True)
SECURE_COOKIES = env_bool("SECURE_COOKIES", not DEBUG)
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "0" if DEBUG else "31536000"))
# Opt-in: both reach beyond this service (every subdomain; browsers' built-in lists, slow to
# leave), so the deploy check's reminders for them are silenced until they are chosen.
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SILENCED_SYSTEM_CHECKS = [
    check
    for check, chosen in (
        ("security.W005", SECURE_HSTS_INCLUDE_SUBDOMAINS),
        ("security.W021", SECURE_HSTS_PRELOAD),
    )
    if not chosen
] + [
    # Django looks for its security, clickjacking and CSRF middleware by path and calls the
    # inline subclasses missing; patient_data.W061-W063 check for the class or a subclass, and
    # patient_data's deploy check runs Django's checks that depend on them (HSTS, SSL, ...).
    "security.W001",
    "security.W002",
    "security.W003",
]
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("BEHIND_TLS_PROXY", False) else None
)
X_FRAME_OPTIONS = "DENY"
CSRF_FAILURE_VIEW = "patient_data.views.api.csrf_failure"

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/patients/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

# Brute-force protection (django-axes) on every login (portal and admin): after
# AXES_FAILURE_LIMIT failures for one username, or from one client address, that username or
# address is refused for AXES_COOLOFF_TIME. Attempts are recorded without the password.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesBackend",  # a ModelBackend too: it has the async aauthenticate
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = int(os.environ.get("AXES_FAILURE_LIMIT", "5"))
AXES_COOLOFF_TIME = timedelta(minutes=float(os.environ.get("AXES_COOLOFF_MINUTES", "15")))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_SENSITIVE_PARAMETERS = ["password", "csrfmiddlewaretoken"]
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS: list = [BASE_DIR / "static"]
if (_bootstrap := packaged_bootstrap_dir()) is not None:
    STATICFILES_DIRS.append(("vendor/bootstrap", _bootstrap))
SERVE_STATIC = env_bool("NCP_SERVE_STATIC", True)
# The objects of the server's start moved out of the garbage collector's walks (ncp_asgi/asgi.py).
NCP_GC_FREEZE_AT_START = env_bool("NCP_GC_FREEZE_AT_START", True)
# The collector's thresholds in a server process: a full collection (which walks every open
# socket's objects) at most every 100 collections of the middle generation, not every 10.
NCP_GC_THRESHOLDS = env_gc_thresholds("NCP_GC_THRESHOLDS", (700, 10, 100))


def _minutes(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


# Patient-session protection (defaults live in patient_data.conf; these only read the env).
PATIENT_SESSION_TIMEOUT = _minutes("PATIENT_SESSION_TIMEOUT", 30)
PATIENT_MAX_INACTIVE_TIME = _minutes("PATIENT_MAX_INACTIVE_TIME", 60)
PATIENT_SESSION_MAX_AGE = _minutes("PATIENT_SESSION_MAX_AGE", 12 * 60)
PATIENT_SESSION_ABSOLUTE_MAX_AGE = _minutes("PATIENT_SESSION_ABSOLUTE_MAX_AGE", 12 * 60)
PATIENT_EPOCH_CACHE_SECONDS = float(os.environ.get("PATIENT_EPOCH_CACHE_SECONDS", 2))
# How many daphne processes serve this deployment (startup_with_cleanup.py --workers sets it):
# the in-memory channel layer cannot connect several (check patient_data.W005).
NCP_WORKERS = int(os.environ.get("NCP_WORKERS", "1"))


def _seconds(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


PATIENT_DISCONNECT_GRACE = _seconds("PATIENT_DISCONNECT_GRACE", 10)
PATIENT_PRESENCE_HEARTBEAT = _seconds("PATIENT_PRESENCE_HEARTBEAT", 5)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "patient_data": {
            "handlers": ["console"],
            "level": os.environ.get("PATIENT_LOG_LEVEL", "INFO"),
        },
        "monitor": {"handlers": ["console"], "level": "INFO"},
    },
}
