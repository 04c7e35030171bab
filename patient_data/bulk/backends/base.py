"""The small contract every session backend fulfils for the bulk cleanup.

Modelled on Django's ``SessionBase`` + ``clearsessions``: one method per operation, and a
backend that cannot do something says so (``UnsupportedBackend``) instead of doing nothing.
Writes are compare-and-set: a session whose stored form changed since it was read is
reported back as a conflict, re-read and re-processed, never overwritten blindly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import datetime
from typing import Any, NamedTuple

from django.core import signing


class UnsupportedBackend(Exception):
    """This session configuration cannot be swept; the message names it and the way out."""


class Undecodable(ValueError):
    """A stored session that cannot be read (tampered, wrong key, corrupt)."""


class Stored(NamedTuple):
    """One session as stored. ``raw`` is compared on write; ``raw is None``: unreadable.

    ``expired``: past its expiry date when it was read (database rows, judged by the
    database itself); backends that derive expiry from the content override
    :meth:`Backend.expired` instead. A named tuple: one is built per stored session.
    """

    key: str
    raw: Any
    expired: bool = False
    mtime_ns: int | None = None


class Backend(ABC):
    """Enumerate, re-read and compare-and-set the sessions of one session engine."""

    #: Short name used in messages (``db``, ``cached_db``, ``cache``, ``file``, ...).
    name = ""
    #: False when the sessions live in the browsers (only the epoch can reach them).
    enumerable = True

    def __init__(self, engine: str, store_class: type) -> None:
        self.engine = engine
        self.store_class = store_class
        self._codec = store_class()

    def describe(self) -> str:
        return f"{self.name} ({self.engine})"

    def count(self) -> int | None:
        """How many sessions there are, when that is cheap to know (progress bar)."""
        return None

    @abstractmethod
    def pages(self, size: int) -> Iterator[list[Stored]]:
        """Every stored session, ``size`` at a time, in constant memory."""

    @abstractmethod
    def fetch(self, keys: list[str]) -> dict[str, Stored]:
        """The current stored form of ``keys`` (absent ones are gone)."""

    @abstractmethod
    def apply(self, updates: list[tuple[Stored, dict]], deletes: list[Stored]) -> set[str]:
        """Write ``updates`` (new content) and remove ``deletes`` where the stored form is
        still the one read; returns the keys that changed meanwhile (nothing done for them)."""

    def decode(self, raw: Any) -> dict:
        """The session dict, or ``Undecodable`` (Django's own decode hides that as ``{}``)."""
        if not raw:
            return {}
        try:
            data = self.loads(raw)
        except Exception as exc:  # noqa: BLE001 - bad signature, JSON, zlib, pickle: all unusable
            raise Undecodable(type(exc).__name__) from None
        if not isinstance(data, dict):
            raise Undecodable("not a mapping")
        return data

    def loads(self, raw: Any) -> Any:
        codec = self._codec
        return signing.loads(raw, salt=codec.key_salt, serializer=codec.serializer)

    def encode(self, data: dict) -> Any:
        return self._codec.encode(data)

    def expired(self, stored: Stored, data: dict, now: datetime) -> bool:
        """Whether the session is past its expiry date (Django would not load it any more)."""
        return stored.expired
