"""Settings for the NCP portal: everything deployment-specific comes from the environment.

With nothing set this is the embedded default (SQLite under var/, in-memory channel layer,
DEBUG on). DATABASE_URL switches to PostgreSQL, REDIS_URL to channels-redis and a Redis cache.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from ncp_asgi.env import (
    database_from_url,
    env_bool,
    env_list,
    packaged_bootstrap_dir,
    sqlite_database,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("NCP_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", True)

DEV_SECRET_KEY = "dev-only-insecure-key-do-not-use-in-production-0123456789abcdef"  # noqa: S105
SECRET_KEY = os.environ.get("SECRET_KEY", DEV_SECRET_KEY)
if not DEBUG and (SECRET_KEY == DEV_SECRET_KEY or len(SECRET_KEY) < 50):
    raise ImproperlyConfigured(
        "DEBUG=0 needs a real SECRET_KEY (at least 50 random characters) in the environment."
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
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "patient_data.middleware.patient_session_security.PatientSessionSecurityMiddleware",
    "patient_data.middleware.patient_session_security.PatientSessionCleanupMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

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
DATABASES = {
    "default": database_from_url(DATABASE_URL, BASE_DIR)
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
            "OPTIONS": {"socket_timeout": 5, "socket_connect_timeout": 2},
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
SECURE_COOKIES = env_bool("SECURE_COOKIES", not DEBUG)
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "0" if DEBUG else "31536000"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", SECURE_HSTS_SECONDS > 0)
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("BEHIND_TLS_PROXY", False) else None
)
X_FRAME_OPTIONS = "DENY"
CSRF_FAILURE_VIEW = "patient_data.views.api.csrf_failure"

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/patients/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

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


def _minutes(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


# Patient-session protection (defaults live in patient_data.conf; these only read the env).
PATIENT_SESSION_TIMEOUT = _minutes("PATIENT_SESSION_TIMEOUT", 30)
PATIENT_MAX_INACTIVE_TIME = _minutes("PATIENT_MAX_INACTIVE_TIME", 60)
PATIENT_SESSION_MAX_AGE = _minutes("PATIENT_SESSION_MAX_AGE", 12 * 60)
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
