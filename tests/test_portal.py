"""The demo portal: sign-in, patient search and summary, and logout clearing patient data."""

from __future__ import annotations

import re
import secrets
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import AsyncClient, Client

from patient_data.models import CleanupEvent, DemoPatient
from patient_data.registry import META_KEY, get_registry
from tests.conftest import sign_in_request

PASSWORD = "portal-test-password-41"
SEARCH_KEYS = {"prefill_search_form", "patient_search_results"}
SUMMARY_KEYS = {
    "current_patient_id",
    "patient_demographics",
    "patient_medications",
    "patient_allergies",
    "patient_problems",
}


@pytest.fixture
def patient(db) -> DemoPatient:
    """Seeds the demo (users ``clinician``/``staff``, five patients); returns the first one."""
    call_command(
        "seed_demo", patients=5, password=PASSWORD, staff_password=PASSWORD, stdout=StringIO()
    )
    return DemoPatient.objects.order_by("patient_id").first()


@pytest.fixture
def signed_in(client: Client, patient: DemoPatient) -> Client:
    assert client.login(request=sign_in_request(), username="clinician", password=PASSWORD)
    return client


def patient_keys(session) -> set[str]:
    return set(get_registry().patient_keys(list(session.keys())))


def found_ids(session) -> list[str]:
    return [entry["patient_id"] for entry in session["patient_search_results"]]


def link_in(results: list[dict], patient: DemoPatient) -> str:
    """The link the last search gave ``patient``, or one to an unknown reference."""
    for entry in results or ():
        if entry["patient_id"] == patient.patient_id:
            return f"/patients/{entry['ref']}/"
    return f"/patients/{secrets.token_hex(16)}/"


def summary_url(client: Client, patient: DemoPatient) -> str:
    return link_in(client.session.get("patient_search_results"), patient)


def open_patient(client: Client, patient: DemoPatient):
    """What a clinician does: search for the patient, then open the result."""
    client.post("/patients/", {"patient_id": patient.patient_id})
    return client.get(summary_url(client, patient))


@pytest.mark.parametrize("path", ["/patients/", "/patients/0123456789abcdef0123456789abcdef/"])
def test_patient_pages_require_login(client: Client, patient: DemoPatient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={path}"


def test_home_redirects_to_the_patient_search(client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/patients/"


def test_login_page_signs_in_and_says_the_data_is_synthetic(
    client: Client, patient: DemoPatient
) -> None:
    page = client.get("/accounts/login/")
    assert page.status_code == 200
    assert "Synthetic demo data only" in page.text

    response = client.post("/accounts/login/", {"username": "clinician", "password": PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == "/patients/"


def test_search_stores_the_form_and_the_results_under_registered_keys(
    signed_in: Client, patient: DemoPatient
) -> None:
    response = signed_in.post("/patients/", {"patient_id": patient.patient_id}, follow=True)

    assert response.redirect_chain == [("/patients/", 302)]
    assert patient.patient_id in response.text
    session = signed_in.session
    assert session["prefill_search_form"] == {
        "name": "",
        "patient_id": patient.patient_id,
        "country": "",
    }
    assert found_ids(session) == [patient.patient_id]
    assert patient_keys(session) == {"prefill_search_form", "patient_search_results"}
    assert session[META_KEY]["since"] is not None


def test_search_by_name_and_country_matches_every_word(
    signed_in: Client, patient: DemoPatient
) -> None:
    name = f"{patient.given_name} {patient.family_name}"
    signed_in.post("/patients/", {"name": name.upper(), "country": patient.country})

    found = found_ids(signed_in.session)
    expected = DemoPatient.objects.filter(
        given_name=patient.given_name, family_name=patient.family_name, country=patient.country
    )
    assert found == [p.patient_id for p in expected]


def test_search_page_shows_the_last_search_from_the_session(
    signed_in: Client, patient: DemoPatient
) -> None:
    signed_in.post("/patients/", {"patient_id": patient.patient_id})

    response = signed_in.get("/patients/")

    assert f'value="{patient.patient_id}"' in response.text
    assert f'href="{summary_url(signed_in, patient)}"' in response.text


def test_no_identifier_ever_stands_in_a_url(signed_in: Client, patient: DemoPatient) -> None:
    """Search terms go in a POST body, results link to opaque references (ASVS 14.2.1)."""
    page = signed_in.post("/patients/", {"patient_id": patient.patient_id}, follow=True).text
    hrefs = re.findall(r'href="([^"]*)"', page)
    assert summary_url(signed_in, patient) in hrefs
    assert not [href for href in hrefs if patient.patient_id in href or "?" in href]
    assert '<form method="post"' in page


def test_an_empty_search_is_refused_and_stores_nothing(
    signed_in: Client, patient: DemoPatient
) -> None:
    response = signed_in.post("/patients/", {"name": " ", "patient_id": "", "country": ""})

    assert response.status_code == 400
    assert "Enter a name, a patient ID or a country." in response.text
    assert patient_keys(signed_in.session) == set()


def test_summary_stores_several_registered_keys_and_sends_patient_page_headers(
    signed_in: Client, patient: DemoPatient
) -> None:
    response = open_patient(signed_in, patient)

    assert response.status_code == 200
    session = signed_in.session
    cda_key = f"patient_cda_{patient.patient_id}"
    assert patient_keys(session) == SUMMARY_KEYS | {cda_key} | SEARCH_KEYS
    assert session["current_patient_id"] == patient.patient_id
    assert session["patient_demographics"]["birth_date"] == patient.birth_date.isoformat()
    assert session["patient_problems"] == patient.summary["problems"]
    assert session[cda_key]["document_id"].startswith("SYN-DOC-")
    assert response["X-Patient-Data-Page"] == "true"
    assert "no-store" in response["Cache-Control"]
    assert response["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response["Content-Security-Policy"]
    assert f"{patient.family_name}, {patient.given_name}" in response.text
    assert "data-patient-data" in response.text


def test_unknown_reference_is_404_and_stores_nothing(
    signed_in: Client, patient: DemoPatient
) -> None:
    response = signed_in.get(f"/patients/{secrets.token_hex(16)}/")

    assert response.status_code == 404
    assert patient_keys(signed_in.session) == set()


def test_only_patients_of_the_own_last_search_can_be_opened(
    signed_in: Client, patient: DemoPatient
) -> None:
    other = DemoPatient.objects.exclude(pk=patient.pk).first()
    signed_in.post("/patients/", {"patient_id": patient.patient_id})

    assert signed_in.get(summary_url(signed_in, other)).status_code == 404
    assert signed_in.get(summary_url(signed_in, patient)).status_code == 200


def test_logout_clears_the_patient_data_and_records_it(
    signed_in: Client, patient: DemoPatient
) -> None:
    open_patient(signed_in, patient)

    response = signed_in.post("/accounts/logout/")

    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/"
    assert patient_keys(signed_in.session) == set()
    event = CleanupEvent.objects.get(reason="logout")
    assert event.action == CleanupEvent.Action.END_SESSION
    assert event.items_cleared == len(SUMMARY_KEYS) + 3
    assert "patient_cda_*" in event.keys
    assert patient.patient_id not in str(event.keys)
    assert signed_in.get("/patients/").status_code == 302


@pytest.mark.django_db(transaction=True)
async def test_async_client_flow_search_summary_logout(patient: DemoPatient) -> None:
    client = AsyncClient()
    assert await client.alogin(request=sign_in_request(), username="clinician", password=PASSWORD)

    search = await client.post("/patients/", {"country": patient.country})
    results = await (await client.asession()).aget("patient_search_results")
    summary = await client.get(link_in(results, patient))
    session = await client.asession()
    keys = set(get_registry().patient_keys(list(await session.akeys())))
    logout = await client.post("/accounts/logout/")

    assert (search.status_code, summary.status_code) == (302, 200)
    assert patient.patient_id in [
        e["patient_id"] for e in await session.aget("patient_search_results")
    ]
    assert keys == SUMMARY_KEYS | {
        "prefill_search_form",
        "patient_search_results",
        f"patient_cda_{patient.patient_id}",
    }
    assert summary["X-Patient-Data-Page"] == "true"
    assert logout.status_code == 302
    event = await CleanupEvent.objects.aget(reason="logout")
    assert event.items_cleared == len(keys)


def test_references_are_random_per_search_and_per_clinician(
    signed_in: Client, patient: DemoPatient
) -> None:
    """Not a function of the patient ID (ASVS 14.2.1; issue #9 item 12): access logs cannot link
    two views of one patient, and a reference cannot be computed from an identifier."""
    signed_in.post("/patients/", {"patient_id": patient.patient_id})
    first = summary_url(signed_in, patient)
    signed_in.post("/patients/", {"patient_id": patient.patient_id})
    second = summary_url(signed_in, patient)
    other = Client()
    assert other.login(request=sign_in_request(), username="staff", password=PASSWORD)
    other.post("/patients/", {"patient_id": patient.patient_id})

    assert len({first, second, summary_url(other, patient)}) == 3
    assert signed_in.get(first).status_code == 404  # an older search's link is void
    assert signed_in.get(second).status_code == 200
    assert other.get(second).status_code == 404  # another clinician's link opens nothing
