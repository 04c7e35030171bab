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
