"""``Clear-Site-Data`` on the responses that end patient data or a session.

Defence in depth only: browsers honour it over HTTPS (or on localhost), ``"cache"`` is only
partly applied by Chrome, and ``"cookies"`` clears the whole registered domain. The server-side
cleanup is what counts.
"""

from __future__ import annotations

from django.http import HttpResponse

from patient_data.conf import conf

HEADER = "Clear-Site-Data"
PATIENT_DATA = '"cache", "storage"'
WHOLE_SESSION = '"cache", "cookies", "storage"'


def add(response: HttpResponse, value: str = PATIENT_DATA) -> HttpResponse:
    """Ask the browser to drop its copies, unless disabled or the view chose a value itself."""
    if conf.PATIENT_CLEAR_SITE_DATA and HEADER not in response:
        response[HEADER] = value
    return response
