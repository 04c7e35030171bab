"""Property-based: whatever a client sends to the API (method, body, content type, headers,
query), it gets a defined JSON answer, never a 500, and no other session is touched."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patient_data.models import CleanupEvent
from patient_data.refs import session_ref
from tests.conftest import Driver, browser_with_patient_data

ENDPOINTS = ["/api/clear-patient-session/", "/api/emergency-session-cleanup/"]
STATUS = "/api/session-status/"
DEFINED = {200, 400, 403, 404, 405, 413, 429}

header_value = st.text(
    alphabet=st.characters(codec="latin-1", exclude_characters="\r\n\x00"), max_size=40
)
ascii_value = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
content_types = st.one_of(
    st.sampled_from(
        [
            "application/json",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
            "multipart/form-data; boundary=",
            "multipart/form-data; boundary=xyz",
            "text/plain; charset=utf-32",
            "application/octet-stream",
        ]
    ),
    ascii_value,  # the test client writes the content type as ASCII
)
headers = st.fixed_dictionaries(
    {},
    optional={
        "X-Cleanup-Trigger": header_value,
        "X-Patient-Activity": header_value,
        "Accept": header_value,
        "X-Requested-With": header_value,
        "Origin": header_value,
    },
)
request = st.fixed_dictionaries(
    {
        "path": st.one_of(
            st.sampled_from([*ENDPOINTS, STATUS]),
            st.builds(lambda base, tail: base + tail, st.sampled_from(ENDPOINTS), header_value),
        ),
        "method": st.sampled_from(["get", "post", "put", "patch", "delete", "options", "head"]),
        "body": st.binary(max_size=300),
        "content_type": content_types,
        "headers": headers,
        "query": st.dictionaries(header_value, header_value, max_size=3),
        "signed_in": st.booleans(),
        "csrf": st.booleans(),
    }
)


@pytest.fixture
def victim(clinician):
    """Another clinician's session holding patient data: nothing may reach it."""
    return browser_with_patient_data(clinician)


def _send(kind: str, clinician, case: dict):
    browser = Driver(kind, enforce_csrf_checks=case["csrf"], raise_request_exception=False)
    extra = {"headers": dict(case["headers"]), "query_params": case["query"]}
    if case["csrf"]:  # a valid token: the request gets past CSRF to the body and the view
        browser.get("/accounts/login/")
        extra["headers"]["X-CSRFToken"] = browser.client.cookies["csrftoken"].value
    if case["signed_in"]:
        browser.force_login(clinician)
    if case["method"] in {"post", "put", "patch", "delete"}:
        # generic(): the body goes out byte for byte (post() re-encodes it per charset)
        extra.update(data=case["body"], content_type=case["content_type"])
    path = case["path"].replace("?", "%3F")
    if browser.kind == "sync":
        return browser.client.generic(case["method"].upper(), path, **extra)

    async def send():
        return await browser.client.generic(case["method"].upper(), path, **extra)

    return async_to_sync(send)()


def _check(case: dict, response, victim: Driver, victim_before: dict) -> None:
    assert response.status_code in DEFINED, response.status_code
    assert response["Content-Type"] == "application/json"
    if case["method"] != "head":  # a HEAD answer has the headers of its GET, no body
        body = response.json()
        if response.status_code >= 400:
            assert body["success"] is False and isinstance(body["error"], str)
    assert victim.stored() == victim_before
    assert not CleanupEvent.objects.filter(session_ref=session_ref(victim.session_key)).exists()


PROPERTY = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.parametrize("kind", ["sync", "async"])
@PROPERTY
@given(case=request)
def test_any_api_request_gets_a_defined_json_answer_and_touches_no_other_session(
    kind, clinician, victim, case
):
    before = victim.stored()
    _check(case, _send(kind, clinician, case), victim, before)


@pytest.mark.parametrize("kind", ["sync", "async"])
@PROPERTY
@given(
    headers=headers,
    query=st.dictionaries(header_value, header_value, max_size=4),
    signed_in=st.booleans(),
)
def test_session_status_answers_any_query_and_headers_with_its_json(
    kind, clinician, victim, headers, query, signed_in
):
    before = victim.stored()
    browser = browser_with_patient_data(clinician, kind) if signed_in else Driver(kind)
    response = browser.get(STATUS, headers=headers, query_params=query)
    assert response.status_code == 200
    body = response.json()
    assert body["authenticated"] is signed_in
    assert body["items"] == (3 if signed_in else 0)
    assert "SYN" not in response.content.decode()
    assert victim.stored() == before
