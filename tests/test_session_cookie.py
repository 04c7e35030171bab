"""The session cookie lives as long as the browser: a shared workstation does not hand it on."""

from __future__ import annotations

from django.conf import settings
from django.test import override_settings


def test_the_session_cookie_ends_with_the_browser(logged_in):
    response = logged_in.get("/_test/store/")
    cookie = response.cookies[settings.SESSION_COOKIE_NAME]
    assert cookie.value
    assert (cookie["expires"], cookie["max-age"]) == ("", "")


@override_settings(SESSION_EXPIRE_AT_BROWSER_CLOSE=False)
def test_a_persistent_cookie_is_a_deliberate_choice(logged_in):
    response = logged_in.get("/_test/store/")
    cookie = response.cookies[settings.SESSION_COOKIE_NAME]
    assert int(cookie["max-age"]) == settings.SESSION_COOKIE_AGE
