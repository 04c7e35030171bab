"""A view's declared read runs in the session's load hop; the view still decides what it uses."""

from __future__ import annotations

import logging
import time

import pytest
from django.http import HttpResponse
from django.test import RequestFactory
from django.urls import path

from patient_data import prefetch as prefetch_module
from patient_data.models import DemoPatient
from patient_data.prefetch import VALUES_ATTR, forget, prefetch, prefetched, read_in_hop
from patient_data.registry import META_KEY
from patient_data.views import portal
from tests.conftest import steady_client
from tests.test_request_hops import PATIENT_HOP

pytestmark = pytest.mark.django_db(transaction=True)

SESSION_HOP = "GuardedSessionMixin._load_with_companions"
READS: list[dict] = []


def _reader(session_data, number):
    READS.append({"session": session_data, "number": number})
    return {("n", number): f"read-{number}"}


@prefetch(_reader)
async def declared(request, number):
    return HttpResponse("declared")


async def undeclared(request):
    return HttpResponse("undeclared")


urlpatterns = [path("d/<int:number>/", declared), path("u/", undeclared)]


def _request(url: str):
    request = RequestFactory().get(url)
    request.urlconf = __name__
    return request


@pytest.fixture(autouse=True)
def _no_reads():
    READS.clear()


def test_the_declared_view_s_reader_gets_the_loaded_data_and_the_url_s_arguments():
    request = _request("/d/7/")
    read_in_hop(request, {"a": 1})
    assert READS == [{"session": {"a": 1}, "number": 7}]
    assert getattr(request, VALUES_ATTR) == {("n", 7): "read-7"}


def test_the_reader_gets_a_copy_it_cannot_change_the_session_through():
    data = {"a": 1}

    def meddling(session_data, number):
        session_data["a"] = 2
        return {}

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(declared, prefetch_module.READER_ATTR, meddling)
        read_in_hop(_request("/d/1/"), data)
    assert data == {"a": 1}


@pytest.mark.parametrize("url", ["/u/", "/nowhere/"])
def test_nothing_is_read_for_an_undeclared_or_unknown_url(url):
    request = _request(url)
    read_in_hop(request, {})
    assert READS == []
    assert not hasattr(request, VALUES_ATTR)


def test_nothing_is_resolved_while_no_view_declares(monkeypatch):
    monkeypatch.setattr(prefetch_module, "_declared", False)
    request = _request("/d/3/")
    read_in_hop(request, {})
    assert READS == [] and not hasattr(request, VALUES_ATTR)


async def test_a_value_is_taken_once_and_only_for_its_own_key():
    request = _request("/d/5/")
    read_in_hop(request, {})
    fetched = []

    async def fetch():
        fetched.append(1)
        return "fetched"

    assert await prefetched(request, ("n", 6), fetch) == "fetched"  # another key
    assert await prefetched(request, ("n", 5), fetch) == "read-5"
    assert await prefetched(request, ("n", 5), fetch) == "fetched"  # taken already
    assert len(fetched) == 2


def test_what_the_view_left_is_dropped_with_the_response():
    request = _request("/d/2/")
    read_in_hop(request, {})
    forget(request)
    assert not hasattr(request, VALUES_ATTR)


# The portal's patient page, end to end.


async def test_the_patient_page_reads_its_patient_in_the_session_s_hop(patient, hops):
    client, url = await steady_client(patient)
    hops.clear()
    response = await client.get(url)
    assert response.status_code == 200
    assert patient.family_name in response.content.decode()
    assert hops.count(SESSION_HOP) == 1 and PATIENT_HOP not in hops


async def test_a_failing_reader_costs_its_hop_and_logs_no_value(patient, hops, caplog):
    client, url = await steady_client(patient)

    def failing(session_data, ref):
        raise ValueError(patient.patient_id)

    hops.clear()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(portal.patient_summary, prefetch_module.READER_ATTR, failing)
        with caplog.at_level(logging.DEBUG, logger="patient_data.prefetch"):
            response = await client.get(url)
    assert response.status_code == 200
    assert patient.family_name in response.content.decode()
    assert hops.count(PATIENT_HOP) == 1
    logged = [r.getMessage() for r in caplog.records if r.name == "patient_data.prefetch"]
    assert logged == ["Prefetch for portal:patient_summary failed (ValueError)."]


async def test_a_patient_gone_since_the_search_is_a_404_with_or_without_the_prefetch(patient):
    client, url = await steady_client(patient)
    await DemoPatient.objects.filter(pk=patient.pk).adelete()
    assert (await client.get(url)).status_code == 404
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(prefetch_module, "_declared", False)
        assert (await client.get(url)).status_code == 404


async def test_a_ref_of_no_search_is_a_404_and_reads_no_patient(patient, hops, queries):
    client, _ = await steady_client(patient)
    hops.clear()
    queries.clear()
    assert (await client.get("/patients/" + "0" * 32 + "/")).status_code == 404
    assert PATIENT_HOP not in hops and '"patient_data_demopatient"' not in queries


async def test_data_cleared_after_the_load_is_not_brought_back_by_the_prefetch(patient, hops):
    """The idle timeout clears the search results after the session's load (and its read):
    the view decides from the session as it is then, and the prefetched row goes unused."""
    client, url = await steady_client(patient)
    session = await client.asession()
    meta = await session.aget(META_KEY)
    await session.aset(META_KEY, {**meta, "seen": time.time() - 31 * 60})
    await session.asave()
    hops.clear()
    response = await client.get(url)
    assert response.status_code == 404
    assert patient.family_name not in response.content.decode()
    assert hops.count(SESSION_HOP) == 1  # the row was read with the session, then not used
    assert await (await client.asession()).aget("patient_search_results") is None
