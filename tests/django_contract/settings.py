"""Settings for Django's own session tests (scripts/django_session_suite): the suite's
settings plus Django's ``sessions_tests`` app, from the unpacked sdist in DJANGO_TESTS_DIR."""

import os
import sys

import django

from tests.settings import *  # noqa: F403
from tests.settings import BASE_DIR, INSTALLED_APPS

DJANGO_TESTS_DIR = os.environ.get("DJANGO_TESTS_DIR") or str(
    BASE_DIR / "var" / "django-tests" / django.get_version()
)
sys.path.insert(0, DJANGO_TESTS_DIR)

INSTALLED_APPS = [*INSTALLED_APPS, "sessions_tests"]
# Django's tests expect the local-memory cache as the default (they clear and inspect it).
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
SESSION_ENGINE = "django.contrib.sessions.backends.db"
