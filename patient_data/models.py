"""Persistent state of the patient-session protection, and the demo portal's patients."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class AppendOnlyError(PermissionError):
    """The audit trail cannot be changed or deleted from the application."""


class CleanupEventQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AppendOnlyError("Cleanup events are append-only.")

    def delete(self):
        raise AppendOnlyError("Cleanup events are append-only.")

    async def aupdate(self, **kwargs):
        raise AppendOnlyError("Cleanup events are append-only.")

    async def adelete(self):
        raise AppendOnlyError("Cleanup events are append-only.")


class ClientHint(models.TextChoices):
    """What a client may claim as the trigger of its cleanup request; anything else is ignored."""

    BUTTON = "button", "Button"
    SHORTCUT = "shortcut", "Keyboard shortcut"


class CleanupEvent(models.Model):
    """One cleanup of patient data or end of a session: counts and names, never values."""

    class Action(models.TextChoices):
        CLEAR_PATIENT_DATA = "clear_patient_data", "Patient data cleared"
        END_SESSION = "end_session", "Session ended"

    # Reviews select by time (and per session); reason and source are few values that are
    # totalled, not searched, so they carry no index of their own: cheaper bulk inserts (and
    # on PostgreSQL no ``_like`` copy of the session_ref index: migration 0008).
    # Set by the writer (patient_data.audit), which hashes it into the chain before the insert.
    created_at = models.DateTimeField(default=timezone.now, editable=False, db_index=True)
    action = models.CharField(max_length=32, choices=Action.choices)
    reason = models.CharField(max_length=64)
    source = models.CharField(max_length=32)
    actor_id = models.BigIntegerField(null=True, blank=True)
    session_ref = models.CharField(
        max_length=64, db_index=True, help_text="Keyed hash of the session key."
    )
    items_cleared = models.PositiveIntegerField(default=0)
    keys = models.JSONField(default=list, help_text="Registry entries cleared (names only).")
    client_hint = models.CharField(  # noqa: DJ001 - NULL: the client claimed nothing
        max_length=16,
        null=True,
        blank=True,
        choices=ClientHint.choices,
        help_text="The trigger the client claimed (X-Cleanup-Trigger); source is the server's.",
    )

    prev_hash = models.CharField(max_length=64, blank=True, default="", editable=False)
    row_hash = models.CharField(
        max_length=64,
        blank=True,
        default="",
        editable=False,
        help_text="SHA-256 over prev_hash and this row (patient_data.audit_chain).",
    )

    objects = CleanupEventQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "patient session cleanup event"

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.action} {self.reason} ({self.source})"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnlyError("Cleanup events are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("Cleanup events are append-only.")


class AuditChainHead(models.Model):
    """The audit chain's head: the hash of the last chained row, in one row (``id`` 1).

    Every audit writer locks this row, chains from it and moves it, in the transaction that
    inserts its rows (patient_data.audit_chain): the row lock is the chain's lock, and
    reading the head is not a scan of the audit table.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    row_hash = models.CharField(max_length=64, blank=True, default="")
    # The head before the last write: lets one statement move the head and return both.
    prev_hash = models.CharField(max_length=64, blank=True, default="")

    def __str__(self) -> str:
        return f"audit chain head {self.row_hash[:12]}"


class PatientSessionState(models.Model):
    """Cleanup generation of one session's patient data (see patient_data.guard).

    Keyed by the random reference kept in the session's bookkeeping, not by the session key,
    so it survives key rotation and also covers signed-cookie sessions.

    The same row is the index of sessions holding patient data (``patient_data.index``): it is
    locked by every save of a blob with patient data and by every cleanup anyway, so keeping
    the index here costs no extra row, lock or round trip. The index columns are written only
    when they change (patient data stored or cleared), never by a plain activity save. On
    PostgreSQL ``ref`` and ``session_ref`` have no ``_like`` index (migration 0008): every
    cleanup's update of the row would write to it, no query reads it.
    """

    ref = models.CharField(max_length=64, primary_key=True)
    generation = models.PositiveBigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)
    # NULL, not "": no key (client-side session) or not indexed; the bulk upsert leaves them out.
    session_key = models.CharField(  # noqa: DJ001
        max_length=1024,
        null=True,
        blank=True,
        help_text="Store key to load the session by; NULL for client-side (signed-cookie) "
        "sessions, which are cleared by bumping the generation.",
    )
    session_ref = models.CharField(  # noqa: DJ001
        max_length=64, null=True, blank=True, db_index=True, help_text="Keyed hash (refs)."
    )
    user_id = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    items = models.PositiveIntegerField(default=0, db_default=0)
    keys = models.JSONField(null=True, blank=True, help_text="Registry entries held (names).")
    since = models.FloatField(null=True, blank=True, help_text="Patient data held since (epoch s).")

    class Meta:
        permissions = [
            ("view_session_monitor", "Can watch the live session monitor"),
            ("cleanup_any_session", "Can clear or end any user's patient session"),
        ]

    def __str__(self) -> str:
        return f"generation {self.generation}"


class EndedSession(models.Model):
    """A session that was ended (logout, emergency cleanup, flush), kept until no copy of it
    can still be presented (see patient_data.revocation).

    Keyed by the random reference in the session's bookkeeping, like the generations.
    """

    ref = models.CharField(max_length=64, primary_key=True)
    expires_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"ended, kept until {self.expires_at:%Y-%m-%d %H:%M}"


class PatientDataEpoch(models.Model):
    """A server-wide counter: patient data stamped with an older epoch is void.

    Advancing it (start-up cleanup, bulk cleanup of signed-cookie sessions) voids all
    patient data at once, before any stored session has been touched.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    value = models.PositiveBigIntegerField(default=0)
    advanced_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"epoch {self.value}"


class DemoPatient(models.Model):
    """A synthetic patient of the demo portal. Every value is generated, none is real."""

    patient_id = models.CharField(max_length=32, unique=True)
    given_name = models.CharField(max_length=64)
    family_name = models.CharField(max_length=64)
    birth_date = models.DateField()
    country = models.CharField(max_length=2)
    summary = models.JSONField(default=dict)

    class Meta:
        ordering = ["family_name", "given_name"]

    def __str__(self) -> str:
        return self.patient_id
