"""Stock stack of bench/request_overhead.py: the project's settings with Django's own
middleware classes (every hook through ``sync_to_async`` under ASGI), patient middlewares kept."""

from ncp_asgi.settings import *  # noqa: F403

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
