"""URL wiring only: each app owns its own routes."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("", include("patient_data.urls")),
    path("", include("patient_data.portal_urls")),
    path("", include("monitor.urls")),
    path("admin/", admin.site.urls),
]

# Under /api/ errors are JSON with a stable code; elsewhere Django's pages.
handler400 = "patient_data.views.errors.bad_request"
handler403 = "patient_data.views.errors.permission_denied"
handler404 = "patient_data.views.errors.page_not_found"
handler500 = "patient_data.views.errors.server_error"
