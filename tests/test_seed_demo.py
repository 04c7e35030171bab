"""``manage.py seed_demo``: deterministic, idempotent, obviously synthetic, safe defaults."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from patient_data import demo_data
from patient_data.management.commands import seed_demo
from patient_data.models import DemoPatient
from tests.conftest import sign_in_request

PASSWORD = "seed-test-password-73"
# Frequent real given and family names across the EU: none may appear in the demo data.
COMMON_REAL_NAMES = {
    "maria", "anna", "jose", "peter", "thomas", "marie", "jean", "giuseppe", "joao", "ana",
    "smith", "muller", "mueller", "garcia", "martin", "rossi", "silva", "dubois", "bernard",
    "schmidt", "fernandez", "lopez", "ferrari", "santos", "peeters", "borg", "schmit",
}  # fmt: skip


def seed(**options) -> str:
    out = StringIO()
    passwords = {"password": PASSWORD, "staff_password": PASSWORD}
    call_command("seed_demo", stdout=out, **{**passwords, **options})
    return out.getvalue()


def snapshot() -> list[tuple]:
    return list(
        DemoPatient.objects.order_by("patient_id").values_list(
            "patient_id", "given_name", "family_name", "birth_date", "country", "summary"
        )
    )


def synthetic_ids(count: int) -> list[str]:
    return sorted(patient.patient_id for patient in demo_data.synthetic_patients(count))


def test_generation_is_deterministic_and_stable_per_patient() -> None:
    assert demo_data.synthetic_patients(30) == demo_data.synthetic_patients(30)
    assert demo_data.synthetic_patients(5) == demo_data.synthetic_patients(30)[:5]


@pytest.mark.django_db
def test_seeding_twice_gives_the_same_patients_and_users() -> None:
    seed(patients=20)
    first = snapshot()
    seed(patients=20)

    assert snapshot() == first
    assert len(first) == 20
    assert [row[0] for row in first] == synthetic_ids(20)
    assert get_user_model().objects.count() == 2


@pytest.mark.django_db
def test_seeding_fewer_patients_removes_the_rest() -> None:
    seed(patients=12)
    seed(patients=4)

    assert [row[0] for row in snapshot()] == synthetic_ids(4)


@pytest.mark.django_db
def test_the_data_is_obviously_synthetic() -> None:
    seed(patients=200)
    invented = {name.lower() for name in demo_data.GIVEN_NAMES + demo_data.FAMILY_NAMES}

    assert not invented & COMMON_REAL_NAMES
    for patient in DemoPatient.objects.all():
        assert demo_data.PATIENT_ID_PATTERN.match(patient.patient_id)
        assert patient.patient_id.startswith(f"SYN-{patient.country}-")
        assert patient.given_name in demo_data.GIVEN_NAMES
        assert patient.family_name in demo_data.FAMILY_NAMES
        assert set(patient.summary["medications"]) <= set(demo_data.MEDICATIONS)
        assert set(patient.summary["allergies"]) <= set(demo_data.ALLERGIES)
        assert set(patient.summary["problems"]) <= set(demo_data.PROBLEMS)


@pytest.mark.django_db
def test_output_names_no_patient() -> None:
    out = seed(patients=10)

    assert "10 created" in out
    for patient in demo_data.synthetic_patients(10):
        assert patient.patient_id not in out
        assert patient.family_name not in out


@pytest.mark.django_db
def test_users_have_their_roles_and_passwords() -> None:
    seed(patients=0, password="clinician-pass-8812", staff_password="staff-pass-5521")

    clinician = authenticate(
        sign_in_request(), username="clinician", password="clinician-pass-8812"
    )
    staff = authenticate(sign_in_request(), username="staff", password="staff-pass-5521")
    assert clinician is not None and not clinician.is_staff
    assert staff is not None and staff.is_staff and not staff.is_superuser


@pytest.mark.django_db
@override_settings(DEBUG=False)
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"password": PASSWORD},
        {"password": PASSWORD, "staff_password": seed_demo.DEFAULT_STAFF_PASSWORD},
    ],
)
def test_default_passwords_are_refused_when_debug_is_off(options: dict) -> None:
    with pytest.raises(CommandError, match="refusing the local-only default password"):
        call_command("seed_demo", stdout=StringIO(), **options)

    assert get_user_model().objects.count() == 0
    assert DemoPatient.objects.count() == 0


@pytest.mark.django_db
@override_settings(DEBUG=True)
def test_documented_defaults_work_when_debug_is_on() -> None:
    call_command("seed_demo", patients=1, stdout=StringIO())

    help_text = seed_demo.Command().create_parser("manage.py", "seed_demo").format_help()
    assert seed_demo.DEFAULT_PASSWORD in help_text
    assert (
        authenticate(sign_in_request(), username="clinician", password=seed_demo.DEFAULT_PASSWORD)
        is not None
    )
    assert (
        authenticate(sign_in_request(), username="staff", password=seed_demo.DEFAULT_STAFF_PASSWORD)
        is not None
    )


@pytest.mark.django_db
def test_a_weak_password_is_refused() -> None:
    with pytest.raises(CommandError, match="--password"):
        seed(password="short")
