"""``manage.py patient_session_audit``: export the cleanup audit trail for compliance."""

from __future__ import annotations

import datetime

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from patient_data import audit_chain
from patient_data.audit_export import WRITERS


def moment(text: str, *, end_of_day: bool = False) -> datetime.datetime:
    """An ISO date or date-time; a bare date means its start (or, for --until, its end)."""
    day = parse_date(text)
    if day is not None:
        parsed = datetime.datetime.combine(day, datetime.time())
        if end_of_day:
            parsed += datetime.timedelta(days=1)
    else:
        parsed = parse_datetime(text)
        if parsed is None:
            raise ValueError(text)
    if timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed)
    return parsed


class Command(BaseCommand):
    help = "Export the patient-session audit trail (no patient values, session keys hashed)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--since", help="ISO date or date-time (inclusive).")
        parser.add_argument("--until", help="ISO date (inclusive) or date-time (exclusive).")
        parser.add_argument("--format", choices=sorted(WRITERS), default="csv")
        parser.add_argument("--output", help="Write to this file instead of stdout.")
        parser.add_argument(
            "--verify",
            action="store_true",
            help="Check the hash chain of the whole trail instead of exporting (exit 1: broken).",
        )

    def handle(self, *args, **options) -> None:
        if options["verify"]:
            self._verify()
            return
        try:
            since = moment(options["since"]) if options["since"] else None
            until = moment(options["until"], end_of_day=True) if options["until"] else None
        except OverflowError:
            raise CommandError(
                "--since/--until out of range: give a date before 9999-12-31.", returncode=2
            ) from None
        except ValueError as exc:
            raise CommandError(
                f"Not an ISO date or date-time: {exc}. Use e.g. 2026-01-31 or 2026-01-31T08:00.",
                returncode=2,
            ) from None
        if since and until and since >= until:
            raise CommandError("--since must be before --until.", returncode=2)
        write = WRITERS[options["format"]]
        if options["output"]:
            try:
                handle = open(options["output"], "w", encoding="utf-8", newline="")
            except OSError as exc:
                raise CommandError(
                    f"Cannot write --output {options['output']}: {exc.strerror}.", returncode=2
                ) from None
            with handle:
                write(handle, since, until)
        else:
            write(self.stdout._out, since, until)

    def _verify(self) -> None:
        result = audit_chain.verify(audit_chain.stored_rows())
        if not result.intact:
            raise CommandError(
                f"Audit chain broken at row id {result.broken_at}: {result.problem} "
                f"({result.checked} rows checked).",
                returncode=1,
            )
        self.stdout.write(
            f"Audit chain intact: {result.checked} rows chained, {result.unchained} from before "
            f"the chain. Head {result.head or '-'}: compare with a head recorded earlier to "
            "see that no rows were cut from the end."
        )
