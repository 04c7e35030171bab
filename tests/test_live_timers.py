"""Server-pushed timeouts: an open page is warned, then cleared or ended, without a request."""

from __future__ import annotations

import time

import pytest
from asgiref.sync import sync_to_async

from patient_data import enforcement, epoch, events, index
from patient_data.conf import conf
from patient_data.models import CleanupEvent
from patient_data.registry import META_KEY
from tests.live_support import (
    Socket,
    rewrite,
    scanned_frames,  # noqa: F401 - fixture
    session_key,
    session_socket,
    signed_in,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("scanned_frames")]


async def _open(client) -> Socket:
    socket = Socket("/ws/patient-session/", session_key(client))
    assert await socket.connect()
    return socket


async def _frames_for(socket: Socket, seconds: float) -> list[dict]:
    """Every frame the socket gets in the next ``seconds`` (a receive that times out would
    cancel the application: poll instead)."""
    frames = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not await socket.nothing(0.1):
            frames.append(await socket.next())
    return frames


async def test_the_page_is_warned_before_the_idle_timeout(clinician):
    client = await signed_in(clinician)
    await rewrite(client, seen=time.time() - conf.PATIENT_SESSION_TIMEOUT * 60 + 30)
    socket = await _open(client)
    warning = await socket.expect("session.timeout_warning")
    assert warning["reason"] == "patient_session_timeout"
    assert 0 < warning["seconds_left"] <= 30
    await socket.close()


async def test_the_idle_timeout_clears_an_open_page_without_a_request(clinician):
    client = await signed_in(clinician)
    await rewrite(client, seen=time.time() - conf.PATIENT_SESSION_TIMEOUT * 60 - 1)
    socket = await _open(client)
    cleared = await socket.expect("session.cleared")
    assert (cleared["reason"], cleared["source"], cleared["items_cleared"]) == (
        "patient_session_timeout", "socket_timer", 3
    )  # fmt: skip
    assert "patient_summary" not in await client.session.aload()
    assert await CleanupEvent.objects.filter(source="socket_timer").acount() == 1
    await socket.close()


async def test_the_absolute_lifetime_clears_an_open_page(clinician):
    client = await signed_in(clinician)
    await rewrite(client, since=time.time() - conf.PATIENT_SESSION_MAX_AGE * 60 - 1)
    socket = await _open(client)
    cleared = await socket.expect("session.cleared")
    assert (cleared["reason"], cleared["source"]) == ("patient_session_max_age", "socket_timer")
    await socket.close()


async def test_max_inactive_ends_the_session_and_closes_the_page(clinician):
    client = await signed_in(clinician)
    await rewrite(client, seen=time.time() - conf.PATIENT_MAX_INACTIVE_TIME * 60 - 1)
    socket = await _open(client)
    ended = await socket.expect("session.ended")
    assert (ended["reason"], ended["source"]) == ("session_max_inactive", "socket_timer")
    assert await socket.closed_with() == 4001
    assert (await client.get("/_test/whoami/")).json() == {"authenticated": False}


async def test_the_warning_before_max_inactive_names_it(clinician):
    client = await signed_in(clinician, patient_data=False)
    await client.get("/_test/plain/")
    await rewrite(client, seen=time.time() - conf.PATIENT_MAX_INACTIVE_TIME * 60 + 20)
    socket = await _open(client)
    warning = await socket.expect("session.timeout_warning")
    assert warning["reason"] == "session_max_inactive"
    await socket.close()


async def test_activity_on_another_process_moves_the_deadline(clinician):
    client = await signed_in(clinician)
    await rewrite(client, seen=time.time() - conf.PATIENT_SESSION_TIMEOUT * 60 + 1.5)
    socket = await _open(client)
    await socket.expect("session.timeout_warning")
    # A request (on any process) records activity and announces it over the layer.
    assert (await client.get("/_test/marked/")).status_code == 200
    frames = await _frames_for(socket, 3)
    assert "session.activity" in [frame["type"] for frame in frames]
    assert "session.cleared" not in [frame["type"] for frame in frames]
    assert "patient_summary" in await client.session.aload()
    await socket.close()


def _timer_looks(monkeypatch) -> list[str]:
    """The judgments the sockets' timers make from now on (the middleware's are not counted)."""
    looks = []
    judge = enforcement.aenforce

    async def counted(target, **kwargs):
        if kwargs.get("source") == "socket_timer":
            looks.append(kwargs["source"])
        return await judge(target, **kwargs)

    monkeypatch.setattr(enforcement, "aenforce", counted)
    return looks


async def test_activity_costs_an_open_page_no_session_load(clinician, monkeypatch):
    # Activity only moves deadlines later: the timer finds it at its deadline, and a click
    # does not make every process holding the page's sockets load the session.
    client = await signed_in(clinician)
    socket = await session_socket(client)
    await _frames_for(socket, 0.5)  # the timer's first look (the handshake's load) is done
    looks = _timer_looks(monkeypatch)
    await events.apublish_activity(session_key(client), time.time())
    await socket.expect("session.activity")
    assert await socket.nothing(0.3)
    assert looks == []
    await socket.close()


async def test_activity_after_a_warning_makes_the_timer_look_again_at_once(clinician, monkeypatch):
    # Warned, the timer sleeps until the deadline (30 s away); the activity's later deadline
    # may want its warning before that, so it looks now.
    client = await signed_in(clinician)
    await rewrite(client, seen=time.time() - conf.PATIENT_SESSION_TIMEOUT * 60 + 30)
    socket = await _open(client)
    await socket.expect("session.timeout_warning")
    looks = _timer_looks(monkeypatch)
    assert (await client.get("/_test/marked/")).status_code == 200  # activity, announced
    await socket.expect("session.activity")
    await _frames_for(socket, 0.5)
    assert looks == ["socket_timer"]
    assert "patient_summary" in await client.session.aload()
    await socket.close()


async def test_an_epoch_advance_makes_every_open_page_judge_its_session_again(clinician):
    client = await signed_in(clinician)
    socket = await _open(client)
    await socket.expect("session.state")
    await sync_to_async(epoch.advance)()
    await sync_to_async(events.publish_batch)([], epoch_advanced=True)
    cleared = await socket.expect("session.cleared")
    assert (cleared["reason"], cleared["source"]) == ("patient_data_epoch_advanced", "socket_timer")
    await socket.close()


async def test_two_tabs_share_one_timer_warned_each_and_cleared_once(clinician):
    client = await signed_in(clinician)
    await rewrite(client, seen=time.time() - conf.PATIENT_SESSION_TIMEOUT * 60 + 2)
    first = await _open(client)
    await first.expect("session.timeout_warning")
    second = await _open(client)
    assert (await second.expect("session.timeout_warning"))["reason"] == "patient_session_timeout"
    for socket in (first, second):
        assert (await socket.expect("session.cleared"))["source"] == "socket_timer"
    assert await CleanupEvent.objects.filter(source="socket_timer").acount() == 1
    await first.close()
    await second.close()


async def test_patient_data_stored_while_a_page_is_open_starts_its_idle_deadline(clinician):
    # The page's socket opened on a session without patient data: its timer waits for the
    # login's own deadlines only. Data stored then (with a last activity already past the idle
    # limit: the write interval had not fallen due) must be judged at once, not at the next
    # activity or the login's deadline.
    client = await signed_in(clinician, patient_data=False)
    socket = await session_socket(client)
    store = index.store(session_key(client))
    data = dict(await store.aitems())
    seen = time.time() - conf.PATIENT_SESSION_TIMEOUT * 60 - 1
    await store.aset(META_KEY, {**data[META_KEY], "seen": seen})
    await store.aset("patient_summary", {"name": "Synthetic Patient"})
    await store.asave()
    await events.apublish_stored(session_key(client), "clinician", dict(await store.aitems()))
    frames = [frame["type"] for frame in await _frames_for(socket, 3)]
    assert "session.cleared" in frames
    assert "patient_summary" not in await index.store(session_key(client)).aload()
    await socket.close()


async def test_an_http_cleanups_click_makes_a_warned_timer_look_again_at_once(
    clinician, monkeypatch
):
    # The click's activity rides in the cleanup's event (no session.activity of its own): a
    # warned timer is woken by it as by any activity.
    client = await signed_in(clinician)
    await rewrite(client, seen=time.time() - conf.PATIENT_SESSION_TIMEOUT * 60 + 30)
    socket = await _open(client)
    await socket.expect("session.timeout_warning")
    looks = _timer_looks(monkeypatch)
    assert (await client.post("/api/clear-patient-session/")).status_code == 200
    assert (await socket.expect("session.cleared"))["activity"] is True
    frames = await _frames_for(socket, 0.5)
    assert "session.activity" not in [frame["type"] for frame in frames]
    assert looks == ["socket_timer"]
    await socket.close()
