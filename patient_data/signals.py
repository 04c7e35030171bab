"""Signals for custom logic around cleanups."""

from __future__ import annotations

from django.dispatch import Signal

#: Sent after every cleanup, whatever triggered it. Keyword arguments: ``action``,
#: ``reason``, ``source``, ``items_cleared``, ``keys`` (registry entries),
#: ``session_ref`` (keyed hash) and ``actor_id``. Never a patient value or a session key.
patient_session_cleared = Signal()
