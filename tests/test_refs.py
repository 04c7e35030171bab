"""Keyed hashes of session keys."""

from __future__ import annotations

from django.test import override_settings
from django.utils.crypto import salted_hmac

from patient_data.refs import KEY_SALT, session_ref


def test_ref_is_the_salted_hmac_of_the_key():
    expected = salted_hmac(KEY_SALT, "abc123", algorithm="sha256").hexdigest()[:32]
    assert session_ref("abc123") == expected
    assert "abc123" not in session_ref("abc123")


def test_ref_depends_on_the_secret():
    plain = session_ref("abc123")
    with override_settings(PATIENT_SESSION_HASH_KEY="another-secret-for-hashing-only"):
        assert session_ref("abc123") != plain
    assert session_ref("abc123") == plain


def test_no_key_no_ref():
    assert session_ref(None) == session_ref("") == "-"
