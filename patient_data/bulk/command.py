"""What both bulk commands share: options, confirmation, progress, output and exit codes.

Exit codes: 0 done, 1 finished with errors, 2 usage error or refused (no confirmation,
unsupported backend).
"""

from __future__ import annotations

import logging
import sys

from django.core.management.base import BaseCommand, CommandError

from patient_data.bulk import indexed
from patient_data.bulk.backends import Backend, UnsupportedBackend, backend_for
from patient_data.bulk.limits import batch_size_refusal, workers_refusal
from patient_data.bulk.progress import Progress
from patient_data.bulk.selection import Selection
from patient_data.bulk.sweep import READ, REPAIR, Report, Sweep
from patient_data.bulk.workers import default_workers
from patient_data.cleanup import Cleanup

logger = logging.getLogger("patient_data.bulk")

REFUSED = 2


class BulkCommand(BaseCommand):
    #: Audit source of the cleanups (``command`` / ``startup``).
    source = ""
    #: Start of the summary line.
    title = ""
    advance_epoch = False
    #: Whether this command reads every stored session (and repairs the index of sessions
    #: holding patient data) or, once the index is repaired, only the indexed ones.
    full = False

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="Report what would be cleaned; change nothing."
        )
        parser.add_argument(
            "--force",
            action="store_true",
            help="No confirmation prompt; also remove undecodable (unusable) sessions.",
        )
        parser.add_argument(
            "--batch-size", type=int, default=1000, help="Sessions per page and per transaction."
        )
        parser.add_argument(
            "--workers",
            type=int,
            default=None,
            metavar="N",
            help="Processes sweeping key ranges of a session table side by side "
            "(default: one per CPU, at most 4).",
        )

    def selection(self, options: dict) -> Selection:
        raise NotImplementedError

    def confirmation(self, options: dict) -> str | None:
        """The question to ask before running, or None when no confirmation is needed."""
        raise NotImplementedError

    def handle(self, *args, **options) -> None:
        if refusal := batch_size_refusal(options["batch_size"]):
            raise CommandError(refusal, returncode=REFUSED)
        if refusal := workers_refusal(options["workers"]):
            raise CommandError(refusal, returncode=REFUSED)
        selection = self.selection(options)
        try:
            backend = backend_for()
        except UnsupportedBackend as exc:
            if self.advance_epoch and not options["dry_run"]:
                self._epoch_only(options)
            raise CommandError(str(exc), returncode=REFUSED) from None
        self.stdout.write(f"{self.title}: session backend {backend.describe()}.")
        question = None if options["dry_run"] or options["force"] else self.confirmation(options)
        if question is not None:
            self._confirm(question)
        report = self._run(backend, selection, options)
        self._summary(report)
        if report.exit_code:
            raise CommandError(
                f"Finished with {report.errors} errors (see the log).", returncode=report.exit_code
            )

    def _run(self, backend: Backend, selection: Selection, options: dict) -> Report:
        progress = Progress(self.stderr._out, backend.count() if backend.enumerable else None)
        verbose = options["verbosity"] >= 2
        sweep = Sweep(
            backend,
            selection,
            source=self.source,
            dry_run=options["dry_run"],
            remove_undecodable=options["force"],
            advance_epoch=self.advance_epoch,
            index=REPAIR if self.full else self._routine_index(),
            batch_size=options["batch_size"],
            workers=options["workers"] or default_workers(),
            on_page=progress.advance,
            on_cleanup=self._line if verbose else None,
        )
        try:
            return sweep.run()
        finally:
            progress.finish()

    @staticmethod
    def _routine_index() -> str | None:
        # Before a full sweep has repaired the index, a routine sweep reads everything.
        return READ if indexed.trusted() else None

    def _epoch_only(self, options: dict) -> None:
        """An unsupported backend still gets the epoch advance (voids all patient data)."""
        report = Sweep(
            backend_for("patient_data.sessions.signed_cookies"),
            Selection(),
            source=self.source,
            advance_epoch=True,
        ).run()
        self._epoch_lines(report)

    def _confirm(self, question: str) -> None:
        if not sys.stdin.isatty():
            raise CommandError(
                "Refusing to run without confirmation: there is no terminal to ask on. "
                "Pass --force to run unattended, or --dry-run to see what would be cleaned.",
                returncode=REFUSED,
            )
        answer = input(f"{question} [y/N] ")
        if answer.strip().lower() not in {"y", "yes"}:
            raise CommandError("Cancelled: nothing was changed.", returncode=REFUSED)

    def _line(self, cleanup: Cleanup) -> None:
        entries = ", ".join(cleanup.keys) or "-"
        self.stdout.write(
            f"  session {cleanup.session_ref}: {cleanup.reason}, "
            f"{cleanup.items_cleared} items ({entries})"
        )

    def _epoch_lines(self, report: Report) -> None:
        if report.epoch is None:
            return
        before, after = report.epoch
        verb = "would be advanced" if report.dry_run else "was advanced"
        self.stdout.write(
            f"The patient-data epoch {verb} from {before} to {after}: the middleware drops the "
            "patient data of every session stamped with an older epoch at its next request."
        )
        if not report.dry_run:
            self.stdout.write(
                "Every server process uses the new epoch now: the command waited out "
                "PATIENT_EPOCH_CACHE_SECONDS, how long a process trusts its copy."
            )
        if report.backend == "signed_cookies":
            self.stdout.write(
                "Signed-cookie sessions live in the browsers and cannot be enumerated or "
                "selected server-side: the epoch covers all of them, whatever the options."
            )

    def _summary(self, report: Report) -> None:
        self._epoch_lines(report)
        would = " would be" if report.dry_run else ""
        if report.backend != "signed_cookies":
            self.stdout.write(
                f"Scanned {report.scanned} sessions, {report.with_patient_data} with patient data."
            )
            if report.epoch is not None:
                self.stdout.write(
                    f"Sessions holding patient data: {report.sessions}{would} cleaned now, "
                    f"{report.voided_by_epoch} more{would} voided by the epoch (cleared at "
                    "their next request)."
                )
        for reason, count in sorted(report.reasons.items()):
            self.stdout.write(f"  {reason}: {count} sessions")
        if report.deleted:
            self.stdout.write(f"{report.deleted} expired sessions{would} removed.")
        if report.undecodable:
            fate = (
                f"{report.undecodable_removed}{would} removed"
                if report.undecodable_removed
                else "kept; --force removes them, they are unusable anyway"
            )
            self.stdout.write(f"{report.undecodable} undecodable sessions ({fate}).")
        done = "dry run" if report.dry_run else "completed"
        removed = "items would be removed" if report.dry_run else "items removed"
        line = (
            f"{self.title} {done}: {report.sessions} sessions, {report.items} {removed}, "
            f"{report.errors} errors"
        )
        if report.dry_run:
            line += " (nothing was changed)"
        self.stdout.write(line)
        logger.info(line)
