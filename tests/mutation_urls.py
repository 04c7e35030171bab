"""The test URLs plus patient pages that bring a Content-Security-Policy of their own."""

from __future__ import annotations

from django.http import HttpResponse
from django.urls import path

from patient_data.decorators import patient_data_page
from tests.urls import handler400, handler403, handler404, handler500
from tests.urls import urlpatterns as base_urlpatterns

OWN_POLICY = "default-src 'self'; img-src 'self' data:; "
OWN_FRAME_ANCESTORS = "default-src 'self'; frame-ancestors 'self'"
#: Ends in a reporting group's name (its last letters are not separators to trim).
OWN_REPORTING = "default-src 'self'; report-to csp-endpoint-X"


def _page(policy: str):
    @patient_data_page
    async def view(request):
        response = HttpResponse("own policy")
        response["Content-Security-Policy"] = policy
        return response

    return view


urlpatterns = [
    path("_test/own-csp/", _page(OWN_POLICY)),
    path("_test/own-frame-ancestors/", _page(OWN_FRAME_ANCESTORS)),
    path("_test/own-reporting/", _page(OWN_REPORTING)),
    *base_urlpatterns,
]

__all__ = ["handler400", "handler403", "handler404", "handler500", "urlpatterns"]
