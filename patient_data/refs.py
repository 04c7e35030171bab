"""Keyed hashes: the only form in which a session key leaves the session."""

from __future__ import annotations

from django.utils.crypto import salted_hmac

from patient_data.conf import conf

REF_LENGTH = 32


def session_ref(session_key: str | None) -> str:
    """A keyed hash (HMAC-SHA256, 128 bits shown) of a session key; ``"-"`` when there is none.

    Stable for one key and secret, so audit rows, logs and monitor events about the same
    session can be correlated without ever storing the key itself.
    """
    if not session_key:
        return "-"
    digest = salted_hmac(
        "patient_data.session_ref",
        session_key,
        secret=conf.PATIENT_SESSION_HASH_KEY,
        algorithm="sha256",
    )
    return digest.hexdigest()[:REF_LENGTH]
