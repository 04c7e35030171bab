"""Test settings: the project's settings with fast hashing and the test database from the env.

DATABASE_URL / REDIS_URL select PostgreSQL and channels-redis exactly as in production, so the
same suite runs on the embedded default and on the real servers (see .ci/run).
"""

from ncp_asgi.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
SECURE_COOKIES = False
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
ROOT_URLCONF = "tests.urls"

# The start-up cleanup waits this long for every process to see an epoch advance.
PATIENT_EPOCH_CACHE_SECONDS = 0.2
