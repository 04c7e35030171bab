"""``manage.py cleanup_patient_sessions``: remove patient data from stored sessions.

Works on every session backend (see docs/commands.md); sessions without patient data are
left untouched, expired sessions holding patient data are removed.
"""

from __future__ import annotations

from patient_data.bulk.command import BulkCommand
from patient_data.bulk.selection import BULK_CLEANUP, Selection


class Command(BulkCommand):
    help = "Remove patient data from stored sessions (every session backend)."
    source = "command"
    title = "Patient session cleanup"

    def add_arguments(self, parser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--unauthenticated-only",
            action="store_true",
            help="Only sessions without an authenticated, existing, active user.",
        )
        parser.add_argument(
            "--expired-only",
            action="store_true",
            help="Only sessions past their expiry date or the patient idle/absolute timeouts.",
        )

    def selection(self, options: dict) -> Selection:
        return Selection(
            unauthenticated_only=options["unauthenticated_only"],
            expired_only=options["expired_only"],
            fallback_reason=BULK_CLEANUP,
        )

    def confirmation(self, options: dict) -> str:
        return "Remove patient data from the selected sessions?"
