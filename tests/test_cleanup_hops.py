"""Thread hops and queries of one cleanup, over HTTP (``POST /api/clear-patient-session/``, the
full middleware stack) and over the socket (``{"type": "cleanup"}``).

The cleanup's own write (``cleanup._persist``: the session, its state row and the audit row,
in one hop and one transaction) is counted as one hop; the queries around it are pinned here,
its own are the cleanup service's business. Besides it, an HTTP cleanup hops only where Django's
handler does (``request_started``, closing the response) and for the session and user rows (one
hop; CSRF checks the header in the loop); the rate limit hops only on a cache that is not Redis.
"""

from __future__ import annotations

import time
from functools import wraps

import pytest
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from django.test import override_settings

from patient_data import cleanup
from patient_data.registry import META_KEY
from tests.live_support import (
    monitor_socket,
    rewrite,
    scanned_frames,  # noqa: F401 - fixture
    session_socket,
    signed_in,
    staff_user,
)
from tests.test_request_hops import HANDLER_HOPS, SESSION_AND_USER_HOP

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("scanned_frames")]

PERSIST = "_persist"
SESSION_WRITE = 'UPDATE "django_session"'


@pytest.fixture(autouse=True)
def epoch_stays_cached(settings):
    """The epoch read at sign-in still answers during the cleanup however slow the machine
    (its re-read, a query and a hop, is no part of the cleanup)."""
    settings.PATIENT_EPOCH_CACHE_SECONDS = 3600


@pytest.fixture
def persist_marked(monkeypatch, queries):
    """``queries``, with the cleanup's own write between two markers."""
    original = cleanup._persist

    @wraps(original)
    def marked(*args, **kwargs):
        queries.append("<persist>")
        try:
            return original(*args, **kwargs)
        finally:
            queries.append("</persist>")

    monkeypatch.setattr(cleanup, "_persist", marked)
    return queries


def _around_persist(tables: list[str]) -> list[str]:
    """The queries run outside the cleanup's own write."""
    start, end = tables.index("<persist>"), tables.index("</persist>")
    assert tables.count("<persist>") == 1
    return tables[:start] + tables[end + 1 :]


def _split_cache_hops(hops: list[str]) -> tuple[list[str], list[str]]:
    """The hops through Django's cache API (the rate limit on a cache that is not Redis: how
    many is Django's business), and the others."""
    prefix = f"{type(caches['default']).__name__}."
    return [h for h in hops if h.startswith(prefix)], [h for h in hops if not h.startswith(prefix)]


@override_settings(PATIENT_CLEANUP_RATE_PER_ADDRESS=120, PATIENT_CLEANUP_RATE_PER_SESSION=10)
async def test_an_http_cleanup_writes_the_session_once_with_its_activity(
    clinician, hops, persist_marked
):
    """Activity is due (the click counts): it rides the cleanup's own write, and the session
    is not written again after the view."""
    client = await signed_in(clinician)
    await rewrite(client, seen=time.time() - 60)
    hops.clear()
    persist_marked.clear()
    # As the page's fetch sends it: no body, so no content type.
    response = await client.post("/api/clear-patient-session/", content_type="")
    assert response.json() == {"success": True, "items_cleared": 3}
    cache_hops, others = _split_cache_hops(hops)
    assert others == [HANDLER_HOPS[0], SESSION_AND_USER_HOP, PERSIST, HANDLER_HOPS[1]]  # no CSRF
    assert cache_hops == []  # it clears patient data: not charged to the rate limit at all
    assert _around_persist(persist_marked) == ['"django_session"', '"auth_user"']
    assert sum(query.startswith(SESSION_WRITE) for query in persist_marked) == 1
    stored = await client.session.aload()
    assert "patient_summary" not in stored
    assert stored[META_KEY]["seen"] > time.time() - 5


async def test_an_http_cleanup_still_announces_the_activity_in_its_cleared_event(clinician):
    client = await signed_in(clinician)
    socket = await session_socket(client)
    await rewrite(client, seen=time.time() - 60)
    await client.post("/api/clear-patient-session/")
    cleared = await socket.expect("session.cleared")
    assert cleared["source"] == "api" and cleared["activity"] is True
    assert await socket.nothing()  # no session.activity of its own after it
    await socket.close()


async def test_a_cleanup_with_nothing_to_clear_is_charged_to_the_rate_limit(clinician, hops):
    client = await signed_in(clinician, patient_data=False)
    hops.clear()
    assert (await client.post("/api/clear-patient-session/")).json()["items_cleared"] == 0
    cache_hops, _ = _split_cache_hops(hops)
    if isinstance(caches["default"], RedisCache):
        assert cache_hops == []  # charged from the event loop, no hop
    else:
        assert cache_hops  # Django's cache API


async def test_a_passive_cleanup_is_not_activity(clinician):
    client = await signed_in(clinician)
    seen = time.time() - 60
    await rewrite(client, seen=seen)
    await client.post("/api/clear-patient-session/", headers={"X-Patient-Activity": "passive"})
    assert (await client.session.aload())[META_KEY]["seen"] == seen


async def test_a_socket_cleanup_loads_once_and_writes_once(clinician, hops, persist_marked):
    client = await signed_in(clinician)
    socket = await session_socket(client)
    hops.clear()
    persist_marked.clear()
    await socket.send({"type": "cleanup", "id": 1})
    assert (await socket.expect("reply"))["items_cleared"] == 3
    assert hops == ["SessionTarget._open", PERSIST]
    assert _around_persist(persist_marked) == ['"django_session"', '"auth_user"']
    await socket.close()


async def test_one_cleanup_reaches_the_session_s_sockets_and_the_staff(clinician):
    client = await signed_in(clinician)
    staff = await monitor_socket(await signed_in(await staff_user(), patient_data=False))
    socket = await session_socket(client)
    await client.post("/api/clear-patient-session/")
    for receiver in (socket, staff):
        cleared = await receiver.expect("session.cleared")
        assert (cleared["reason"], cleared["items_cleared"]) == ("manual_cleanup", 3)
    await socket.close()
    await staff.close()
