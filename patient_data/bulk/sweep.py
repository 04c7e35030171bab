"""The streaming engine shared by both bulk commands.

Page by page (constant memory): decode, keep aside the sessions holding patient data, load
their users in one query, decide, then in one transaction bump the cleanup generations of the
sessions to change (so a request that loaded one before cannot write its patient data back),
compare-and-set the cleaned sessions and insert their audit rows. A session that changed
between read and write is re-read and decided again; a failing page is retried session by
session, so one bad session never aborts the run.
"""

from __future__ import annotations

import gc
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from patient_data import audit, epoch, events, guard
from patient_data import meta as session_meta
from patient_data.bulk import indexed, workers
from patient_data.bulk.backends import Backend, Stored, Undecodable
from patient_data.bulk.selection import (
    DELETE,
    EPOCH_ADVANCED,
    UNDECODABLE_SESSION,
    Decision,
    Selection,
    Users,
)
from patient_data.cleanup import Cleanup
from patient_data.models import CleanupEvent
from patient_data.refs import session_ref
from patient_data.registry import META_KEY, get_registry
from patient_data.signals import patient_session_cleared

logger = logging.getLogger("patient_data.bulk")

#: How often a session that keeps changing under the sweep is re-read before giving up.
MAX_ATTEMPTS = 5
#: ``Sweep(index=...)``: read only the indexed sessions / read all and repair the index.
READ = "read"
REPAIR = "repair"


@dataclass
class Report:
    """What a run did (or, with ``dry_run``, would do): counts and reasons, never values."""

    backend: str
    dry_run: bool = False
    scanned: int = 0
    with_patient_data: int = 0
    sessions: int = 0
    deleted: int = 0
    items: int = 0
    undecodable: int = 0
    undecodable_removed: int = 0
    errors: int = 0
    reasons: Counter = field(default_factory=Counter)
    #: (before, after) when the patient-data epoch was (or would be) advanced.
    epoch: tuple[int, int] | None = None
    #: Sessions holding patient data from before that advance that this run leaves as they
    #: are: void by the epoch, cleared by the middleware at their next request.
    voided_by_epoch: int = 0

    @property
    def exit_code(self) -> int:
        return 1 if self.errors else 0


#: The youngest generation's collection threshold while a sweep runs (Python's default: 700).
SWEEP_GC_THRESHOLD = 50_000


@contextmanager
def _frozen_heap() -> Iterator[None]:
    """The objects alive before the sweep (Django, the app, the settings) set aside from the
    cyclic garbage collector while it runs (``gc.freeze``; forked workers inherit it), and
    its youngest generation collected every ``SWEEP_GC_THRESHOLD`` allocations, not 700.

    The sweep allocates many containers per page, most of them freed by their reference
    counts, so the collector ran often: its full passes walked every object of the process
    (a sixth of a sweep's CPU) and its young passes cost another 5 %. The pages' own objects
    are collected as before (constant memory; at most ``SWEEP_GC_THRESHOLD`` containers wait
    for the next young pass). At the end the threshold is restored and the frozen objects
    return to the collector's oldest generation, unless some were frozen before (a server
    that froze its heap before forking): then all stay frozen, as that process wants its own.
    """
    frozen_before = gc.get_freeze_count()
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(threshold[0], SWEEP_GC_THRESHOLD), *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        if not frozen_before:
            gc.unfreeze()


@dataclass
class _Plan:
    stored: Stored
    decision: Decision
    cleanup: Cleanup
    data: dict[str, Any] | None = None
    keys: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> str | None:
        return self.info.get("ref")


class Sweep:
    """One bulk run over one backend."""

    def __init__(
        self,
        backend: Backend,
        selection: Selection,
        *,
        source: str,
        dry_run: bool = False,
        remove_undecodable: bool = False,
        advance_epoch: bool = False,
        index: str | None = None,
        batch_size: int = 1000,
        workers: int = 1,
        on_page: Callable[[int], None] | None = None,
        on_cleanup: Callable[[Cleanup], None] | None = None,
    ) -> None:
        self.backend = backend
        self.selection = selection
        self.source = source
        self.dry_run = dry_run
        self.remove_undecodable = remove_undecodable
        self.advance_epoch = advance_epoch or not backend.enumerable
        #: ``read``: only the indexed sessions; ``repair``: all, and the index repaired.
        self.index = index if backend.enumerable else None
        self.batch_size = batch_size
        #: Processes sweeping key ranges side by side (``patient_data.bulk.workers``).
        self.workers = workers
        self.on_page = on_page or (lambda scanned: None)
        self.on_cleanup = on_cleanup or (lambda cleanup: None)
        self.users = Users()
        self.registry = get_registry()
        self.report = Report(backend.name, dry_run=dry_run)
        self._entries: set[str] = set()
        #: Sessions of the current page holding patient data and not (yet) cleaned.
        self._holding: dict[str, dict[str, Any]] = {}

    def run(self) -> Report:
        # The live monitor's events of the run (one batch per page) on one event loop.
        with events.one_loop():
            return self._run()

    def _run(self) -> Report:
        advanced_at = time.monotonic()
        if self.advance_epoch:
            self._advance_epoch()
        started = timezone.now()
        if self.backend.enumerable:
            with _frozen_heap():
                if self.index == READ or not workers.sweep(self):
                    self.sweep_pages(self._pages())
        if self.index == REPAIR and not self.dry_run:
            indexed.finish_repair(started)
        if self.report.sessions and not self.dry_run:
            events.publish(self._summary_event())
        if self.report.epoch is not None and not self.dry_run:
            # Void in every server process when the command says so, not up to the
            # epoch cache's lifetime later.
            epoch.wait_until_in_force(advanced_at)
        return self.report

    def sweep_pages(self, pages: Iterable[list[Stored]]) -> None:
        """Decide, write and count page by page (in this process, or in a worker)."""
        for page in pages:
            plans = self._page(page)
            if self.dry_run:
                self._done(plans)
            elif plans:
                self._commit(plans)
            if self.index == REPAIR and not self.dry_run:
                # What still holds patient data (cleaned sessions left the index with
                # their generation bump).
                indexed.confirm(self._holding.items())
            self.on_page(len(page))

    def _advance_epoch(self) -> None:
        before = epoch.current()
        if self.dry_run:
            self.report.epoch = (before, before + 1)
            return
        self.report.epoch = (before, epoch.advance())
        events.publish_batch([], epoch_advanced=True)
        audit.record(
            Cleanup(CleanupEvent.Action.CLEAR_PATIENT_DATA, EPOCH_ADVANCED, self.source, 0, (), "-")
        )

    # -- reading and deciding -------------------------------------------------------------

    def _pages(self) -> Iterator[list[Stored]]:
        if self.index == READ:
            return indexed.pages(self.backend, self.batch_size)
        return self.backend.pages(self.batch_size)

    def _decode(self, stored: Stored) -> tuple[dict[str, Any], list[str]] | None:
        """The session and its patient keys when it holds patient data; ``({}, [])`` for an
        undecodable one that is to go; None for every other session (left untouched)."""
        if stored.raw is None:
            self.report.errors += 1
            logger.error("A stored session could not be read (%s).", session_ref(stored.key))
            return None
        try:
            data, keys = self.backend.holding(stored.raw, self.registry)
        except Undecodable:
            self.report.undecodable += 1
            return ({}, []) if self.remove_undecodable else None
        return (data, keys) if keys else None

    def _plan(
        self, stored: Stored, data: dict[str, Any], keys: list[str], now: datetime
    ) -> _Plan | None:
        if not data:
            decision = Decision(DELETE, UNDECODABLE_SESSION)
            return _Plan(stored, decision, self._cleanup(stored, decision, []))
        mtime = stored.mtime_ns / 1e9 if stored.mtime_ns is not None else None
        decision = self.selection.decide(
            data,
            expired=self.backend.expired(stored, data, now),
            user_ok=self.users.ok(data),
            now=now.timestamp(),
            mtime=mtime,
        )
        if decision is None:
            return None
        info = session_meta.with_ref(session_meta.read(data))
        return _Plan(stored, decision, self._cleanup(stored, decision, keys), data, keys, info)

    def _plans(self, found: list[tuple[Stored, dict[str, Any], list[str]]]) -> list[_Plan]:
        self.users.load(data for _, data, _ in found)
        now = timezone.now()
        plans = [self._plan(stored, data, keys, now) for stored, data, keys in found]
        return [plan for plan in plans if plan is not None]

    def _page(self, page: list[Stored]) -> list[_Plan]:
        """What to do with the sessions of one page (decoding and deciding, no writes)."""
        found = []
        for stored in page:
            decoded = self._decode(stored)
            if decoded is not None:
                found.append((stored, *decoded))
        self.report.scanned += len(page)
        self.report.with_patient_data += sum(1 for _, _, keys in found if keys)
        self.report.voided_by_epoch += sum(1 for _, data, keys in found if self._void(data, keys))
        self._holding = {stored.key: data for stored, data, keys in found if keys}
        return self._plans(found)

    def _void(self, data: dict[str, Any] | None, keys: list[str]) -> bool:
        """Whether the session holds patient data the epoch advance voids."""
        if self.report.epoch is None or not keys or data is None:
            return False
        return session_meta.read(data).get("epoch", 0) < self.report.epoch[1]

    # -- writing --------------------------------------------------------------------------

    def _commit(self, plans: list[_Plan]) -> None:
        try:
            done, failed = self._write(plans)
        except Exception as exc:  # noqa: BLE001 - one bad session must not abort the run
            if len(plans) > 1:
                for plan in plans:
                    self._commit([plan])
                return
            self.report.errors += 1
            logger.error(
                "Cleanup of session %s failed (%s).",
                session_ref(plans[0].stored.key),
                type(exc).__name__,
            )
            return
        self.report.errors += failed
        self._done(done)

    def _write(self, plans: list[_Plan]) -> tuple[list[_Plan], int]:
        """Apply ``plans`` under new generations; returns the applied plans and the failures."""
        done: list[_Plan] = []
        with transaction.atomic():
            generations = guard.bump_many(plan.ref for plan in plans if plan.ref)
            for _attempt in range(MAX_ATTEMPTS):
                updates = [
                    (plan.stored, self._cleaned(plan, generations[plan.ref]))
                    for plan in plans
                    if plan.decision.action != DELETE
                ]
                deletes = [plan.stored for plan in plans if plan.decision.action == DELETE]
                conflicts = self.backend.apply(updates, deletes)
                done += [plan for plan in plans if plan.stored.key not in conflicts]
                plans = self._reread(sorted(conflicts))
                fresh = {plan.ref for plan in plans if plan.ref and plan.ref not in generations}
                generations.update(guard.bump_many(fresh))
                if not plans:
                    break
            audit.record_many(plan.cleanup for plan in done)
        return done, len(plans)

    def _reread(self, keys: list[str]) -> list[_Plan]:
        """Decide again for sessions that changed under the sweep (gone ones are done).

        What the page's sessions hold (``_holding``, which a full sweep indexes) follows the
        re-read: a session gone or holding no patient data any more is not indexed, one
        holding some now is indexed with what it holds now.
        """
        if not keys:
            return []
        for key in keys:
            self._holding.pop(key, None)
        found = []
        for stored in self.backend.fetch(keys).values():
            decoded = self._decode(stored)
            if decoded is not None:
                found.append((stored, *decoded))
                if decoded[1]:
                    self._holding[stored.key] = decoded[0]
        return self._plans(found)

    @staticmethod
    def _cleaned(plan: _Plan, generation: int) -> dict[str, Any]:
        patient = set(plan.keys)
        data = {key: value for key, value in plan.data.items() if key not in patient}
        data[META_KEY] = session_meta.after_cleanup(plan.info, generation)
        return data

    def _cleanup(self, stored: Stored, decision: Decision, keys: list[str]) -> Cleanup:
        action = (
            CleanupEvent.Action.END_SESSION
            if decision.action == DELETE
            else CleanupEvent.Action.CLEAR_PATIENT_DATA
        )
        return Cleanup(
            action=action,
            reason=decision.reason,
            source=self.source,
            items_cleared=len(keys),
            keys=tuple(self.registry.entries(keys)),
            session_ref=session_ref(stored.key),
        )

    def _done(self, plans: list[_Plan]) -> None:
        report = self.report
        for plan in plans:
            self._holding.pop(plan.stored.key, None)
            cleanup = plan.cleanup
            if plan.decision.reason == UNDECODABLE_SESSION:
                report.undecodable_removed += 1
            else:
                report.sessions += 1
                report.items += cleanup.items_cleared
                report.deleted += plan.decision.action == DELETE
            report.reasons[plan.decision.reason] += 1
            report.voided_by_epoch -= self._void(plan.data, plan.keys)
            self._entries.update(cleanup.keys)
        if plans:
            self.announce([plan.cleanup for plan in plans])

    def announce(self, cleanups: list[Cleanup]) -> None:
        """The cleanup signal, the verbose lines and the live monitor's events of cleanups
        just committed; in the command's process (a worker hands them over)."""
        signal = not self.dry_run and patient_session_cleared.has_listeners(Cleanup)
        for cleanup in cleanups:
            if signal:
                patient_session_cleared.send(sender=Cleanup, **asdict(cleanup))
            self.on_cleanup(cleanup)
        if cleanups and not self.dry_run:
            events.publish_batch([cleanup.as_event() for cleanup in cleanups])

    def merge(self, report: Report, entries: set[str]) -> None:
        """Add a worker's counts and registry entries to this run's."""
        for name in (
            "scanned",
            "with_patient_data",
            "sessions",
            "deleted",
            "items",
            "undecodable",
            "undecodable_removed",
            "errors",
            "voided_by_epoch",
        ):
            setattr(self.report, name, getattr(self.report, name) + getattr(report, name))
        self.report.reasons.update(report.reasons)
        self._entries.update(entries)

    def _summary_event(self) -> dict[str, Any]:
        """One event for the live monitor per run (not one per session)."""
        summary = Cleanup(
            action=CleanupEvent.Action.CLEAR_PATIENT_DATA,
            reason=self.selection.fallback_reason,
            source=self.source,
            items_cleared=self.report.items,
            keys=tuple(sorted(self._entries)),
            session_ref="-",
        )
        return {**summary.as_event(), "sessions": self.report.sessions}
