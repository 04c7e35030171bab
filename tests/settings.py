"""Test settings: the project's settings with fast hashing and the test database from the env.

DATABASE_URL / REDIS_URL select PostgreSQL and channels-redis exactly as in production, so the
same suite runs on the embedded default and on the real servers (see .ci/run). The tests run
with production defaults (DEBUG off) and a key of their own, set here explicitly.
"""

import os

TEST_SECRET_KEY = "tests-only-secret-key-never-deployed-0123456789abcdefghijklmnop"
os.environ.setdefault("SECRET_KEY", TEST_SECRET_KEY)

from ncp_asgi.settings import *  # noqa: E402, F403

DEBUG = False
SECRET_KEY = TEST_SECRET_KEY
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
SECURE_COOKIES = False
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
ROOT_URLCONF = "tests.urls"

# The start-up cleanup waits this long for every process to see an epoch advance.
PATIENT_EPOCH_CACHE_SECONDS = 0.2
# The local-memory cache lives as long as the test process and every test client calls from
# 127.0.0.1: a per-address cleanup limit would count the whole suite. Its tests turn it on.
PATIENT_CLEANUP_RATE_PER_ADDRESS = 0
# The suite imports the ASGI application into its own process: its objects stay collectable.
NCP_GC_FREEZE_AT_START = False
# ... and its collector keeps the interpreter's thresholds.
NCP_GC_THRESHOLDS = None
