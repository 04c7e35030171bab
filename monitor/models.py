"""Presence in the database (used when no Redis is configured): which sockets are open.

Times are wall-clock seconds (``time.time()``) so the same numbers work in Redis and here.
"""

from __future__ import annotations

from django.db import models


class PresenceProcess(models.Model):
    """A server process holding sockets; alive while its heartbeat keeps ``expires_at`` ahead."""

    process_id = models.CharField(max_length=32, primary_key=True)
    expires_at = models.FloatField(db_index=True)

    def __str__(self) -> str:
        return self.process_id


class PresenceSocket(models.Model):
    """One open socket of a session, counted while its process is alive."""

    socket_id = models.CharField(max_length=128, primary_key=True)
    session_ref = models.CharField(max_length=64, db_index=True)
    process = models.ForeignKey(PresenceProcess, on_delete=models.CASCADE, related_name="sockets")

    def __str__(self) -> str:
        return self.socket_id


class PresenceDue(models.Model):
    """A session whose last socket closed: cleared at ``due_at`` unless a socket comes back."""

    session_ref = models.CharField(max_length=64, primary_key=True)
    due_at = models.FloatField(db_index=True)

    def __str__(self) -> str:
        return self.session_ref
