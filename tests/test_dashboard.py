"""The staff dashboard page: server-rendered first state, permissions, no values."""

from __future__ import annotations

import pytest

from tests.live_support import (
    PATIENT_VALUES,
    monitor_socket,
    session_key,
    signed_in,
    staff_user,
)

pytestmark = pytest.mark.django_db(transaction=True)


async def test_the_dashboard_lists_a_session_holding_patient_data(clinician):
    await signed_in(clinician)
    staff = await signed_in(await staff_user(), patient_data=False)
    response = await staff.get("/monitor/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "clinician" in page
    assert 'data-can-act="true"' in page
    assert 'data-command="end_session"' in page
    row = page.split("data-monitor-rows>")[1].split("</tbody>")[0]
    assert row.count("<tr data-session=") == 1
    assert '<td data-field="items">3</td>' in row
    assert "current_patient_id" in row and "patient_cda_*" in row


async def test_the_dashboard_carries_no_patient_value_and_no_session_key(clinician):
    patient_client = await signed_in(clinician)
    staff = await signed_in(await staff_user(), patient_data=False)
    page = (await staff.get("/monitor/")).content.decode()
    for value in PATIENT_VALUES:
        assert value not in page
    assert session_key(patient_client) not in page
    assert session_key(staff) not in page


async def test_watching_staff_get_no_action_buttons(clinician):
    await signed_in(clinician)
    staff = await signed_in(await staff_user(act=False), patient_data=False)
    page = (await staff.get("/monitor/")).content.decode()
    assert 'data-can-act="false"' in page
    assert 'data-command="cleanup"' not in page


async def test_an_empty_dashboard_says_so(clinician):
    staff = await signed_in(await staff_user(), patient_data=False)
    page = (await staff.get("/monitor/")).content.decode()
    assert "No session holds patient data now." in page
    assert "data-monitor-empty hidden" not in page


async def test_a_clinician_is_refused_the_dashboard(clinician):
    client = await signed_in(clinician, patient_data=False)
    assert (await client.get("/monitor/")).status_code == 403


def test_the_dashboard_needs_a_sign_in(client):
    response = client.get("/monitor/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


async def test_storing_patient_data_is_announced_to_the_monitor_at_once(clinician):
    monitor = await monitor_socket(await signed_in(await staff_user(), patient_data=False))
    await signed_in(clinician)
    stored = await monitor.expect("session.stored")
    assert (stored["user"], stored["items"]) == ("clinician", 3)
    assert stored["keys"] == ["current_patient_id", "patient_cda_*", "patient_summary"]
    assert stored["idle_seconds_left"] > 0
    await monitor.close()


async def test_a_request_that_stores_nothing_announces_nothing(clinician):
    client = await signed_in(clinician)
    monitor = await monitor_socket(await signed_in(await staff_user(), patient_data=False))
    assert (await client.get("/_test/plain/")).status_code == 200
    assert await monitor.nothing(0.5)
    await monitor.close()


async def test_the_navbar_links_the_dashboard_for_staff_only(clinician):
    staff = await signed_in(await staff_user(), patient_data=False)
    assert 'href="/monitor/"' in (await staff.get("/patients/")).content.decode()
    client = await signed_in(clinician, patient_data=False)
    assert 'href="/monitor/"' not in (await client.get("/patients/")).content.decode()
