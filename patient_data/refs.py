"""Keyed hashes: the only form in which a session key leaves the session."""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache

from patient_data.conf import conf

REF_LENGTH = 32
KEY_SALT = "patient_data.session_ref"


@lru_cache(maxsize=8)
def _derived_key(salt: str, secret: str) -> bytes:
    # What django.utils.crypto.salted_hmac derives on every call; bulk runs hash every
    # cleaned session, so it is derived once per secret here.
    return hashlib.sha256((salt + secret).encode()).digest()


def _keyed(salt: str, value: str) -> str:
    key = _derived_key(salt, conf.PATIENT_SESSION_HASH_KEY)
    return hmac.digest(key, value.encode(), "sha256").hex()[:REF_LENGTH]


def session_ref(session_key: str | None) -> str:
    """A keyed hash (HMAC-SHA256, 128 bits shown) of a session key; ``"-"`` when there is none.

    Stable for one key and secret, so audit rows, logs and monitor events about the same
    session can be correlated without ever storing the key itself. Equal to
    ``salted_hmac(KEY_SALT, key, secret=PATIENT_SESSION_HASH_KEY, algorithm="sha256")``.
    """
    if not session_key:
        return "-"
    return _keyed(KEY_SALT, session_key)


def address_ref(address: str) -> str:
    """A keyed hash of a client address, for counters kept in a shared cache."""
    return _keyed("patient_data.address_ref", address)
