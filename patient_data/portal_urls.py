"""Routes of the demo portal: sign-in, patient search and patient summary."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path
from django.views.generic import RedirectView

from patient_data.views import portal

app_name = "portal"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="portal:patient_search"), name="home"),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("patients/", portal.patient_search, name="patient_search"),
    path("patients/<slug:ref>/", portal.patient_summary, name="patient_summary"),
]
