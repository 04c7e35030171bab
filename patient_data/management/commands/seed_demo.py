"""``manage.py seed_demo``: demo users and deterministic synthetic patients (local use)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from patient_data.demo_data import synthetic_patients
from patient_data.models import DemoPatient

DEFAULT_USERNAME = "clinician"
# Local-only demo credentials, documented in --help and refused when DEBUG is off.
DEFAULT_PASSWORD = "clinician-demo-only"  # noqa: S105
DEFAULT_STAFF_USERNAME = "staff"
DEFAULT_STAFF_PASSWORD = "staff-demo-only"  # noqa: S105
DEFAULT_PATIENTS = 50
#: The live monitor's permissions (``patient_data.*``): the staff user gets both.
MONITOR_PERMISSIONS = ("view_session_monitor", "cleanup_any_session")


class Command(BaseCommand):
    help = (
        "Create or update the demo portal's users and synthetic patients (idempotent). "
        f"Local-only default credentials: {DEFAULT_USERNAME} / {DEFAULT_PASSWORD} and "
        f"{DEFAULT_STAFF_USERNAME} / {DEFAULT_STAFF_PASSWORD} (staff). They are refused "
        "when DEBUG is off: give --password and --staff-password there."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default=DEFAULT_USERNAME)
        parser.add_argument("--password", help=f"default (DEBUG only): {DEFAULT_PASSWORD}")
        parser.add_argument("--staff-username", default=DEFAULT_STAFF_USERNAME)
        parser.add_argument(
            "--staff-password", help=f"default (DEBUG only): {DEFAULT_STAFF_PASSWORD}"
        )
        parser.add_argument(
            "--patients", type=int, default=DEFAULT_PATIENTS, help="how many synthetic patients"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["patients"] < 0:
            raise CommandError("--patients must be 0 or more.")
        password = self._password(options["password"], DEFAULT_PASSWORD, "--password")
        staff_password = self._password(
            options["staff_password"], DEFAULT_STAFF_PASSWORD, "--staff-password"
        )
        with transaction.atomic():
            users = [
                self._user(options["username"], password, staff=False),
                self._user(options["staff_username"], staff_password, staff=True),
            ]
            created, updated, removed = self._patients(options["patients"])
        self.stdout.write(self.style.SUCCESS("Demo users: " + ", ".join(users) + "."))
        self.stdout.write(
            self.style.SUCCESS(
                f"Synthetic patients: {options['patients']} "
                f"({created} created, {updated} updated, {removed} removed)."
            )
        )

    @staticmethod
    def _password(given: str | None, default: str, option: str) -> str:
        if given is None or given == default:
            if not settings.DEBUG:
                raise CommandError(
                    f"DEBUG is off: refusing the local-only default password. Give {option}."
                )
            return default
        try:
            validate_password(given)
        except ValidationError as exc:
            raise CommandError(f"{option}: " + " ".join(exc.messages)) from exc
        return given

    @staticmethod
    def _user(username: str, password: str, *, staff: bool) -> str:
        user, created = get_user_model().objects.update_or_create(
            username=username, defaults={"is_staff": staff, "is_active": True}
        )
        user.set_password(password)
        user.save(update_fields=["password"])
        if staff:
            monitor = Permission.objects.filter(
                content_type__app_label="patient_data", codename__in=MONITOR_PERMISSIONS
            )
            user.user_permissions.add(*monitor)
        role = "staff" if staff else "clinician"
        return f"{username} ({role}, {'created' if created else 'updated'})"

    @staticmethod
    def _patients(count: int) -> tuple[int, int, int]:
        patients = synthetic_patients(count)
        created = 0
        for patient in patients:
            _, was_created = DemoPatient.objects.update_or_create(
                patient_id=patient.patient_id, defaults=patient.model_fields()
            )
            created += was_created
        wanted = [patient.patient_id for patient in patients]
        removed, _ = DemoPatient.objects.exclude(patient_id__in=wanted).delete()
        return created, len(patients) - created, removed
