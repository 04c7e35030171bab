"""The small contract every session backend fulfils for the bulk cleanup.

Modelled on Django's ``SessionBase`` + ``clearsessions``: one method per operation, and a
backend that cannot do something says so (``UnsupportedBackend``) instead of doing nothing.
Writes are compare-and-set: a session whose stored form changed since it was read is
reported back as a conflict, re-read and re-processed, never overwritten blindly.
"""

from __future__ import annotations

import json
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from functools import cached_property
from typing import Any, NamedTuple

from django.core import signing

#: Largest payload the pre-filter inflates before the signature is checked; a bigger one
#: goes the verified way (signature first, as Django does), so no stored row can make the
#: pre-filter allocate more than this.
PEEK_LIMIT = 1 << 20


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
        #: Whether payloads may be read before their signature is checked: Django's signed
        #: format with its JSON serializer only (never unpickle what is not verified).
        self.peekable = (
            type(self).loads is Backend.loads and self._codec.serializer is signing.JSONSerializer
        )

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

    def holding(
        self, raw: Any, patient_keys: Callable[[Iterable[str]], list[str]]
    ) -> tuple[dict | None, list[str]]:
        """The session and its patient keys, or ``(None, [])`` when it holds none; raises
        ``Undecodable`` like :meth:`decode` for a session that may hold some.

        The pre-filter (signed JSON payloads): the payload is read without checking its
        signature first; when it names no registered key the row holds no patient data
        whatever its signature (with a valid one Django loads exactly that dict; with a bad
        one Django loads an empty session), so it is left there, unverified and unused. A
        payload naming a registered key is used only once its signature is verified (as
        Django's own loads, fallback keys included). A payload that does not parse, or is
        larger than ``PEEK_LIMIT``, goes the verified way as before.
        """
        data = self._peek(raw) if self.peekable else None
        if data is None:
            data = self.decode(raw)
            keys = patient_keys(data)
            return (data, keys) if keys else (None, [])
        keys = patient_keys(data)
        if not keys:
            return None, []
        try:
            self._signer.unsign(raw)
        except Exception as exc:  # noqa: BLE001 - bad signature or timestamp: unusable
            raise Undecodable(type(exc).__name__) from None
        return data, keys

    @cached_property
    def _signer(self) -> signing.TimestampSigner:
        # What signing.loads builds per call (the keys read once per run).
        return signing.TimestampSigner(salt=self._codec.key_salt)

    @staticmethod
    def _peek(raw: Any) -> dict | None:
        """The payload of a signed session as Django's loads would read it once verified,
        without verifying it; None when it does not parse here (the caller then verifies)."""
        if not isinstance(raw, str):
            return None
        try:
            # The splits of TimestampSigner.unsign: value:timestamp:signature.
            value = raw.rsplit(":", 1)[0].rsplit(":", 1)
            if len(value) != 2:
                return None
            payload = value[0].encode()
            compressed = payload[:1] == b"."
            data = signing.b64_decode(payload[1:] if compressed else payload)
            if compressed:
                inflate = zlib.decompressobj()
                data = inflate.decompress(data, PEEK_LIMIT)
                if not inflate.eof or inflate.unconsumed_tail:
                    return None
            elif len(data) > PEEK_LIMIT:
                return None
            # Django's JSONSerializer.loads.
            found = json.loads(data.decode("latin-1"))
        except Exception:  # noqa: BLE001 - whatever does not parse goes the verified way
            return None
        return found if isinstance(found, dict) else None

    def loads(self, raw: Any) -> Any:
        codec = self._codec
        return signing.loads(raw, salt=codec.key_salt, serializer=codec.serializer)

    def encode(self, data: dict) -> Any:
        return self._codec.encode(data)

    def expired(self, stored: Stored, data: dict, now: datetime) -> bool:
        """Whether the session is past its expiry date (Django would not load it any more)."""
        return stored.expired
