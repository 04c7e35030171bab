"""Django's signed session payloads, verified and written without Django's per-call setup.

A stored session is ``SessionBase.encode``'s output: ``signing.dumps(data, salt=key_salt,
serializer=JSONSerializer, compress=True)``, i.e. ``[.]base64(json or zlib(json)):timestamp:
signature`` where the signature is the base64 HMAC-SHA256 of everything before it under a key
derived from the salt and ``SECRET_KEY`` (``SECRET_KEY_FALLBACKS`` also verify). Django builds
a signer, derives that key (one SHA-256 over the secret), sets up a Python HMAC object and a
JSON encoder, and tries zlib, on every call: a full sweep re-encodes hundreds of thousands of
cleaned sessions and verifies as many, and that setup cost more than the work.

:class:`SignedPayloads` does the same steps with the keys derived once per run (and the
HMAC's inner and outer hashes of each key started once). It writes the JSON uncompressed:
Django's format marks compression with a leading dot and ``loads`` reads both forms to the
same dict; Django compresses only to save bytes (cookies), and a cleaned session is a few
hundred bytes of a table row. Before it is used a sample goes through both ways
(:meth:`SignedPayloads.checked`): what it writes Django's ``loads`` reads to the same dict,
and it verifies what Django signs and refuses a forged signature; otherwise the backend keeps
Django's own calls.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from typing import Any

from django.conf import settings
from django.core import signing
from django.utils.encoding import force_bytes

#: HMAC-SHA256 pads (RFC 2104) over a key of one SHA-256 block.
BLOCK = 64
INNER = bytes(0x36 for _ in range(BLOCK))
OUTER = bytes(0x5C for _ in range(BLOCK))
#: Django's JSONSerializer: ``json.dumps(obj, separators=(",", ":"))``, encoder built once.
ENCODER = json.JSONEncoder(separators=(",", ":"))
#: Timestamps ``signing.b62_decode`` reads without an error (a sign, then base-62 digits);
#: any other goes to it, to raise as it does.
BASE62 = re.compile("-?[0-9A-Za-z]+")


def _pads(key: bytes) -> tuple[Any, Any]:
    """The inner and outer SHA-256 states of HMAC under ``key`` (at most one block long)."""
    key = key.ljust(BLOCK, b"\0")
    return (
        hashlib.sha256(bytes(k ^ i for k, i in zip(key, INNER, strict=True))),
        hashlib.sha256(bytes(k ^ o for k, o in zip(key, OUTER, strict=True))),
    )


class SignedPayloads:
    """Verify and sign session payloads of one salt with the keys read once."""

    def __init__(self, salt: str) -> None:
        self.salt = salt
        # Signer.signature: salted_hmac(salt + "signer", value, key, algorithm="sha256"),
        # whose key is sha256(salt + "signer" + secret): 32 bytes, one block once padded.
        key_salt = force_bytes(salt + "signer")
        secrets = [settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS]
        self._pads = [
            _pads(hashlib.sha256(key_salt + force_bytes(key)).digest()) for key in secrets
        ]
        #: The last second signed and its base-62 form (``dumps``: a run signs thousands of
        #: sessions within one second).
        self._second: tuple[int, str] = (-1, "")

    def verify(self, raw: str) -> None:
        """``TimestampSigner(salt=...).unsign(raw)``: raises as it does (BadSignature for a
        missing separator or a signature no key made, ValueError for a bad timestamp)."""
        if ":" not in raw:
            raise signing.BadSignature("No separator found")
        value, signature = raw.rsplit(":", 1)
        # force_bytes of a str (raw is one: it was split): its UTF-8, strict.
        given = signature.encode()
        message = value.encode()
        for pads in self._pads:
            if hmac.compare_digest(given, _signature(pads, message)):
                break
        else:
            raise signing.BadSignature("Signature does not match")
        _, timestamp = value.rsplit(":", 1)
        if BASE62.fullmatch(timestamp) is None:  # only to raise: the value is not used
            signing.b62_decode(timestamp)

    def dumps(self, data: dict[str, Any]) -> str:
        """A payload ``SessionBase.decode`` reads as ``data``, signed now with ``SECRET_KEY``
        (uncompressed, see above)."""
        text = ENCODER.encode(data).encode("latin-1")
        payload = base64.urlsafe_b64encode(text).rstrip(b"=").decode()
        value = f"{payload}:{self._timestamp(int(time.time()))}"
        return f"{value}:{_signature(self._pads[0], value.encode()).decode()}"

    def _timestamp(self, second: int) -> str:
        """``signing.b62_encode(second)``, computed once per second."""
        if self._second[0] != second:
            self._second = (second, signing.b62_encode(second))
        return self._second[1]

    def checked(self) -> bool:
        """Whether this class reads and writes what Django does under the current settings
        (a sample both ways; a mismatch keeps the backend on Django's own calls)."""
        sample = {"_patient_meta": {"gen": 1, "ref": "0" * 32}, "note": "x" * 200, "n": 1}
        try:
            written = signing.loads(self.dumps(sample), salt=self.salt)
            signed = signing.dumps(sample, salt=self.salt, compress=True)
            self.verify(signed)
        except Exception:  # noqa: BLE001 - any disagreement: use Django's calls
            return False
        forged = signed[:-1] + ("A" if signed[-1] != "A" else "B")
        try:
            self.verify(forged)
        except signing.BadSignature:
            return written == sample
        return False


def _signature(pads: tuple[Any, Any], message: bytes) -> bytes:
    """base64(HMAC-SHA256(key, message)) without padding, as ``Signer.signature`` gives it."""
    inner, outer = pads[0].copy(), pads[1].copy()
    inner.update(message)
    outer.update(inner.digest())
    return base64.urlsafe_b64encode(outer.digest()).rstrip(b"=")
