"""Every trigger of a cleanup reaches the session's open sockets."""

from __future__ import annotations

import time
from io import StringIO

import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command

from patient_data import index
from patient_data.conf import conf
from patient_data.refs import session_ref
from tests.live_support import (
    monitor_socket,
    rewrite,
    scanned_frames,  # noqa: F401 - fixture
    session_key,
    session_socket,
    signed_in,
    staff_user,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("scanned_frames")]


async def _cleared(socket, kind: str = "session.cleared") -> dict:
    frame = await socket.expect(kind)
    assert frame["items_cleared"] == 3
    return frame


async def test_the_http_api_cleanup_reaches_the_sockets(clinician):
    client = await signed_in(clinician)
    socket = await session_socket(client)
    assert (await client.post("/api/clear-patient-session/")).status_code == 200
    assert (await _cleared(socket))["source"] == "api"
    await socket.close()


async def test_the_http_emergency_cleanup_closes_the_sockets(clinician):
    client = await signed_in(clinician)
    socket = await session_socket(client)
    assert (await client.post("/api/emergency-session-cleanup/")).status_code == 200
    assert (await _cleared(socket, "session.ended"))["reason"] == "emergency_cleanup"
    assert await socket.closed_with() == 4001


@pytest.mark.parametrize("path", ["/_test/logout/", "/_test/alogout/"])
async def test_a_logout_closes_the_sockets(clinician, path):
    client = await signed_in(clinician)
    socket = await session_socket(client)
    await client.get(path)
    assert (await _cleared(socket, "session.ended"))["reason"] == "logout"
    assert await socket.closed_with() == 4001


async def test_the_middleware_idle_timeout_reaches_the_sockets(clinician):
    client = await signed_in(clinician)
    socket = await session_socket(client)
    await rewrite(client, seen=time.time() - conf.PATIENT_SESSION_TIMEOUT * 60 - 5)
    await client.get("/_test/plain/")
    cleared = await _cleared(socket)
    assert (cleared["reason"], cleared["source"]) == ("patient_session_timeout", "middleware")
    await socket.close()


async def test_the_middleware_max_inactive_end_closes_the_sockets(clinician):
    client = await signed_in(clinician)
    socket = await session_socket(client)
    await rewrite(client, seen=time.time() - conf.PATIENT_MAX_INACTIVE_TIME * 60 - 5)
    await client.get("/_test/plain/")
    assert (await _cleared(socket, "session.ended"))["reason"] == "session_max_inactive"
    assert await socket.closed_with() == 4001


async def test_the_bulk_command_reaches_the_sockets(clinician):
    client = await signed_in(clinician)
    socket = await session_socket(client)
    await sync_to_async(call_command)("cleanup_patient_sessions", force=True, stdout=StringIO())
    cleared = await socket.expect("session.cleared")
    assert cleared["source"] == "command"
    assert cleared["session"] == session_ref(session_key(client))
    await socket.close()


async def test_the_startup_command_reaches_the_sockets(clinician):
    client = await signed_in(clinician)
    socket = await session_socket(client)
    await sync_to_async(call_command)(
        "startup_cleanup_patient_sessions", all_sessions=True, force=True, stdout=StringIO()
    )
    assert (await socket.expect("session.cleared"))["items_cleared"] == 3
    await socket.close()


async def test_presence_reaches_the_sockets(clinician):
    client = await signed_in(clinician)
    socket = await session_socket(client)
    ref = session_ref(session_key(client))
    assert await index.aclear_by_ref(ref, reason="browser_closed", source="presence") == 3
    cleared = await _cleared(socket)
    assert (cleared["reason"], cleared["source"]) == ("browser_closed", "presence")
    await socket.close()


async def test_the_monitor_gets_one_summary_per_bulk_run(clinician):
    await signed_in(clinician)
    monitor = await monitor_socket(await signed_in(await staff_user(), patient_data=False))
    await sync_to_async(call_command)("cleanup_patient_sessions", force=True, stdout=StringIO())
    summary = await monitor.expect("sessions.cleared")
    assert (summary["source"], summary["sessions"], summary["items_cleared"]) == ("command", 1, 3)
    await monitor.close()
