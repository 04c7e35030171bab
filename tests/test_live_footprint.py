"""What an open socket keeps: no copy of its session's content (patient data among it) for
the socket's lifetime; it decides on the session as stored."""

from __future__ import annotations

import gc

import pytest

from monitor import fanout
from patient_data.registry import get_registry
from tests.live_support import (
    monitor_socket,
    scanned_frames,  # noqa: F401 - fixture
    session_key,
    session_socket,
    signed_in,
    staff_user,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("scanned_frames")]


def _sessions_holding_patient_data() -> list[object]:
    from django.contrib.sessions.backends.base import SessionBase

    gc.collect()
    return [
        obj
        for obj in gc.get_objects()
        if isinstance(obj, SessionBase)
        and get_registry().patient_keys(list(getattr(obj, "_session_cache", {})))
    ]


async def test_an_open_socket_keeps_no_copy_of_the_patient_data(clinician):
    client = await signed_in(clinician)
    before = len(_sessions_holding_patient_data())
    socket = await session_socket(client)  # connected, its state received
    (consumer,) = [s for s in fanout._sockets if s.identity.session_key == session_key(client)]
    assert not hasattr(consumer.scope["session"], "_session_cache")
    # At most as many as before: an earlier request's session may have been collected since.
    assert len(_sessions_holding_patient_data()) <= before
    await socket.send({"type": "status"})
    state = await socket.expect("session.state")
    assert state["items"] == 3  # decided on the session as stored
    await socket.close()


async def test_a_staff_socket_keeps_no_copy_of_its_session(clinician):
    staff = await signed_in(await staff_user(), patient_data=False)
    socket = await monitor_socket(staff)
    (consumer,) = [s for s in fanout._sockets if s.staff]
    assert not hasattr(consumer.scope["session"], "_session_cache")
    await socket.close()
