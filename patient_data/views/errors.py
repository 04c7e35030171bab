"""Error handlers: under ``/api/`` every answer is JSON with a stable code, never a page.

Django calls these for exceptions raised anywhere in the request (a middleware reading a
malformed or oversized body, a missing route, an unhandled error); other paths keep Django's
own pages.
"""

from __future__ import annotations

import sys

from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import HttpRequest, HttpResponse
from django.http.multipartparser import MultiPartParserError
from django.views import defaults

from patient_data.views.api import (
    RETRY_AFTER_UNAVAILABLE,
    database_unavailable,
    error,
    is_api,
    service_unavailable,
)

TOO_LARGE = (RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if not is_api(request):
        return defaults.bad_request(request, exception)
    if isinstance(exception, TOO_LARGE):
        return error("body_too_large", 413, "The request body is over the size limit.")
    if isinstance(exception, MultiPartParserError):
        return error("malformed_body", 400, "The request body could not be read.")
    return error("bad_request", 400, "The request could not be understood.")


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if not is_api(request):
        return defaults.permission_denied(request, exception)
    return error("forbidden", 403, "This request is not allowed.")


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if not is_api(request):
        return defaults.page_not_found(request, exception)
    return error("not_found", 404, "There is no such endpoint.")


def server_error(request: HttpRequest) -> HttpResponse:
    """500, or 503 (with Retry-After) when the database is out of reach for a moment (no
    pooled connection free in time, too many clients): Django calls this inside the
    exception's handling, also under ASGI (asgiref re-raises it in the thread)."""
    if database_unavailable(sys.exc_info()[1]):
        if is_api(request):
            return service_unavailable()
        response = defaults.server_error(request, template_name="503.html")
        response.status_code = 503
        response["Retry-After"] = str(RETRY_AFTER_UNAVAILABLE)
        return response
    if not is_api(request):
        return defaults.server_error(request)
    return error("server_error", 500, "The request could not be completed.")
