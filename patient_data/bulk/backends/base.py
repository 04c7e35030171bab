"""The small contract every session backend fulfils for the bulk cleanup.

Modelled on Django's ``SessionBase`` + ``clearsessions``: one method per operation, and a
backend that cannot do something says so (``UnsupportedBackend``) instead of doing nothing.
Writes are compare-and-set: a session whose stored form changed since it was read is
reported back as a conflict, re-read and re-processed, never overwritten blindly.
"""

from __future__ import annotations

import binascii
import re
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, NamedTuple

from django.contrib.sessions.backends.base import SessionBase
from django.core import signing

from patient_data import fastjson
from patient_data.bulk.backends.payloads import SignedPayloads

if TYPE_CHECKING:
    from patient_data.registry import Registry

#: ``base64.urlsafe_b64decode``'s alphabet translation.
URLSAFE = bytes.maketrans(b"-_", b"+/")

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
        self._needles_for: Registry | None = None
        self._pattern: re.Pattern | None = None

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

    def holding(self, raw: Any, registry: Registry) -> tuple[dict | None, list[str]]:
        """The session and its patient keys, or ``(None, [])`` when it holds none; raises
        ``Undecodable`` like :meth:`decode` for a session that may hold some.

        The pre-filter (signed JSON payloads, see docs/commands.md): the payload is read
        before its signature is checked. When it cannot name a registered key the row
        holds no patient data whatever its signature (with a valid one Django loads a dict
        without any, with a bad one or a payload that is no JSON an empty session), so it
        is left there unverified and unused. It cannot name one when the JSON text has no
        escape (a backslash) and no registered key in quotes (``"key"``) nor a quote and a
        declared prefix (``"prefix``): without escapes a JSON string is its characters as
        written. Otherwise it is parsed as Django's ``JSONSerializer`` would and, when it
        does name one, used only once its signature is verified as Django's
        ``TimestampSigner.unsign`` does (``payloads``; fallback keys included). A payload
        that does not unpack here, or is larger than ``PEEK_LIMIT``, goes the verified way
        as before.
        """
        text = self._payload(raw) if self.peekable else None
        if text is None:
            data = self.decode(raw)
            keys = registry.patient_keys(data)
            return (data, keys) if keys else (None, [])
        if "\\" not in text and not self._needles(registry).search(text):
            return None, []
        try:
            data = fastjson.loads(text)
        except Exception:  # noqa: BLE001 - no JSON (or too deep): Django loads an empty session
            data = None
        if not isinstance(data, dict):
            return None, []
        keys = registry.patient_keys(data)
        if not keys:
            return None, []
        try:
            self._verify(raw)
        except Exception as exc:  # noqa: BLE001 - bad signature or timestamp: unusable
            raise Undecodable(type(exc).__name__) from None
        return data, keys

    def _needles(self, registry: Registry) -> re.Pattern:
        """What a JSON text without escapes holds if it names a key of ``registry``."""
        if self._needles_for is not registry:
            needles = [f'"{key}"' for key in registry.keys] + [
                f'"{prefix}' for prefix in registry.prefixes
            ]
            self._pattern = re.compile("|".join(map(re.escape, sorted(needles))) or "(?!)")
            self._needles_for = registry
        return self._pattern

    @cached_property
    def _signed(self) -> SignedPayloads | None:
        """Django's signing steps with the keys read once per run (``payloads``), when this
        backend stores Django's signed JSON format and the sample check agrees."""
        if not self.peekable:
            return None
        signed = SignedPayloads(self._codec.key_salt)
        return signed if signed.checked() else None

    @cached_property
    def _signer(self) -> signing.TimestampSigner:
        # What signing.loads builds per call (the keys read once per run).
        return signing.TimestampSigner(salt=self._codec.key_salt)

    def _verify(self, raw: str) -> None:
        """``TimestampSigner.unsign`` of Django's loads (raises as it does)."""
        if self._signed is not None:
            self._signed.verify(raw)
        else:
            self._signer.unsign(raw)

    @staticmethod
    def _payload(raw: Any) -> str | None:
        """The JSON text of a signed session as Django's loads reads it once verified (the
        same splits, base64 and zlib steps, latin-1 text), without verifying it; None when
        it does not unpack here (the caller then verifies)."""
        if not isinstance(raw, str):
            return None
        try:
            # The splits of TimestampSigner.unsign (value:timestamp:signature) in one.
            parts = raw.rsplit(":", 2)
            if len(parts) != 3:
                return None
            payload = parts[0].encode()
            compressed = payload[:1] == b"."
            data = _b64_decode(payload[1:] if compressed else payload)
            if compressed:
                inflate = zlib.decompressobj()
                data = inflate.decompress(data, PEEK_LIMIT)
                if not inflate.eof or inflate.unconsumed_tail:
                    return None
            elif len(data) > PEEK_LIMIT:
                return None
        except Exception:  # noqa: BLE001 - whatever does not unpack goes the verified way
            return None
        return data.decode("latin-1")

    def loads(self, raw: Any) -> Any:
        codec = self._codec
        return signing.loads(raw, salt=codec.key_salt, serializer=codec.serializer)

    def encode(self, data: dict) -> Any:
        if self._signed is not None and type(self._codec).encode is SessionBase.encode:
            return self._signed.dumps(data)
        return self._codec.encode(data)

    def expired(self, stored: Stored, data: dict, now: datetime) -> bool:
        """Whether the session is past its expiry date (Django would not load it any more)."""
        return stored.expired


def _b64_decode(data: bytes) -> bytes:
    """``signing.b64_decode``: padded, then ``urlsafe_b64decode``'s own steps (translate,
    non-strict ``a2b_base64``) without its three layers of calls; every session of a full
    sweep goes through here."""
    return binascii.a2b_base64((data + b"=" * (-len(data) % 4)).translate(URLSAFE))
