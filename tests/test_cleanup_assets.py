"""The cleanup script and buttons are really on the pages and served (ORIGINAL_DEFECTS 6, 8)."""

from __future__ import annotations

import re

import pytest
from channels.testing import HttpCommunicator
from django.contrib.staticfiles import finders
from django.test import Client
from django.urls import reverse

SCRIPT = "/static/js/patient_session_cleanup.js"


async def asgi_get(application, path: str) -> tuple[int, bytes]:
    """GET through the ASGI app with no network.

    ``HttpCommunicator.get_response`` expects a ``body`` in every message, but a streamed
    file response ends with a body-less one (optional in the ASGI spec): read it here.
    """
    communicator = HttpCommunicator(application, "GET", path)
    await communicator.send_input({"type": "http.request", "body": b""})
    start = await communicator.receive_output(timeout=5)
    body = b""
    while True:
        message = await communicator.receive_output(timeout=5)
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return start["status"], body


def test_logged_in_pages_load_the_script_and_the_buttons(logged_in) -> None:
    """Through ``Client`` and ``AsyncClient`` (the ``logged_in`` driver runs both)."""
    html = logged_in.get("/patients/").text

    assert f'<script src="{SCRIPT}" defer></script>' in html
    assert 'data-action="clear-patient-data"' in html
    assert 'data-action="emergency-cleanup"' in html
    assert "data-session-monitor" in html
    assert re.search(r'<meta name="csrf-token" content="[A-Za-z0-9]{64}">', html)
    for name in ("clear", "emergency", "status"):
        assert f'="{reverse(f"patient_data:{name}")}"' in html
    assert '="/static/vendor/bootstrap/css/bootstrap.min.css"' in html
    assert "//cdn" not in html and "https://" not in html


def test_anonymous_pages_have_no_cleanup_widget(client: Client, db) -> None:
    html = client.get("/accounts/login/").text

    assert SCRIPT not in html
    assert "data-patient-session-cleanup" not in html


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("path", "marker"),
    [
        (SCRIPT, b"window.clearPatientSession"),
        ("/static/vendor/bootstrap/css/bootstrap.min.css", b"Bootstrap"),
        ("/static/vendor/bootstrap/js/bootstrap.bundle.min.js", b"Bootstrap"),
        ("/static/css/portal.css", b"data-patient-data"),
    ],
)
async def test_static_files_are_served_by_the_asgi_app(path: str, marker: bytes) -> None:
    from ncp_asgi.asgi import application

    status, body = await asgi_get(application, path)

    assert status == 200
    assert marker in body


def test_script_never_wipes_on_navigation_and_posts_with_csrf() -> None:
    source = open(finders.find("js/patient_session_cleanup.js"), encoding="utf-8").read()

    assert not re.search(r"""addEventListener\(\s*["'](beforeunload|unload|pagehide)""", source)
    assert "sendBeacon" not in source
    assert "jQuery" not in source and "$(" not in source
    assert '"X-CSRFToken"' in source
    assert '"X-Patient-Activity": "passive"' in source
    assert '"X-Cleanup-Trigger"' in source
    assert 'new CustomEvent("patientSessionCleared"' in source
