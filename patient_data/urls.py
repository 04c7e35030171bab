from __future__ import annotations

from django.urls import path

from patient_data.views import api

app_name = "patient_data"

urlpatterns = [
    path("api/clear-patient-session/", api.clear_patient_session, name="clear"),
    path("api/emergency-session-cleanup/", api.emergency_session_cleanup, name="emergency"),
    path("api/session-status/", api.session_status, name="status"),
]
