"""ours-bare of bench/request_overhead.py: the project's settings minus the patient middlewares."""

from ncp_asgi.settings import *  # noqa: F403
from ncp_asgi.settings import MIDDLEWARE as FULL_MIDDLEWARE

PATIENT_MIDDLEWARE = (
    "patient_data.middleware.patient_session_security.PatientSessionSecurityMiddleware",
    "patient_data.middleware.patient_session_security.PatientSessionCleanupMiddleware",
)
MIDDLEWARE = [name for name in FULL_MIDDLEWARE if name not in PATIENT_MIDDLEWARE]
