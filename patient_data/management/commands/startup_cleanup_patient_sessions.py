"""``manage.py startup_cleanup_patient_sessions``: the cleanup to run before serving.

Advances the patient-data epoch first (so no patient data from before the restart is ever
served, on any backend), then sweeps the stored sessions: by default those without a valid
user and those idle past the timeout; ``--all-sessions`` takes authenticated ones too.
"""

from __future__ import annotations

from django.core.management.base import CommandError

from patient_data.bulk.command import REFUSED, BulkCommand
from patient_data.bulk.limits import older_than_hours_refusal
from patient_data.bulk.selection import STARTUP_CLEANUP, Selection


class Command(BulkCommand):
    help = "Clean patient data left in stored sessions before the server starts."
    source = "startup"
    title = "Server startup patient session cleanup"
    advance_epoch = True
    full = True

    def add_arguments(self, parser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--all-sessions",
            action="store_true",
            help="Also sessions of authenticated users with recent activity.",
        )
        parser.add_argument(
            "--older-than-hours",
            type=float,
            default=None,
            metavar="N",
            help="Only sessions whose last activity is older than N hours.",
        )

    def selection(self, options: dict) -> Selection:
        hours = options["older_than_hours"]
        if refusal := older_than_hours_refusal(hours):
            raise CommandError(refusal, returncode=REFUSED)
        return Selection(
            include_authenticated=options["all_sessions"],
            older_than_seconds=hours * 3600 if hours is not None else None,
            fallback_reason=STARTUP_CLEANUP,
        )

    def confirmation(self, options: dict) -> str | None:
        # The default selection only takes data nobody may keep; all sessions needs a yes.
        if options["all_sessions"]:
            return "Remove patient data from ALL sessions, including authenticated users'?"
        return None
