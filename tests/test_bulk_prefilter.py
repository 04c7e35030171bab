"""The pre-filter of signed payloads (``Backend.holding``): a row is skipped unverified only
when its payload names no registered key; a row that may hold patient data never is."""

from __future__ import annotations

import json
import zlib

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.core import signing
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patient_data.bulk.backends import Undecodable, backend_for
from patient_data.bulk.backends.base import PEEK_LIMIT
from patient_data.registry import get_registry
from tests.bulk_support import (
    CORRUPTIONS,
    corrupted,
    engine_fixture,  # noqa: F401 - the "engine" fixture
    make_session,
    run,
)

SALT = SessionStore().key_salt
PATIENT = {"note": "keep-me", "patient_summary": {"problems": ["SYNTH-P"]}}


def signed(text: str | bytes, *, compress: bool = False, key: str | None = None) -> str:
    """A session payload signed as Django signs one, from the exact JSON text given."""
    data = text.encode("latin-1") if isinstance(text, str) else text
    dot = ""
    if compress:
        data, dot = zlib.compress(data), "."
    value = dot + signing.b64_encode(data).decode()
    return signing.TimestampSigner(key=key, salt=SALT).sign(value)


def holding(raw: str):
    backend = backend_for("patient_data.sessions.db")
    return backend.holding(raw, get_registry())


def verified(raw: str):
    """Django's own reading: the dict once the signature is checked, or Undecodable."""
    return backend_for("patient_data.sessions.db").decode(raw)


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize(
    "text",
    [
        json.dumps(PATIENT),
        # Escapes Django never writes but JSON reads as the registered name.
        '{"\\u0070atient_summary": {"problems": ["SYNTH-P"]}}',
        '{"patient\\u005fsummary": 1, "note": "x"}',
        # A declared prefix, and a key given twice (the last one counts, as in Django).
        '{"patient_cda_SYNTH42": "<synthetic/>"}',
        '{"note": 1, "note": 2, "current_patient_id": "SYN-1"}',
        # Whitespace and nesting Django never writes.
        ' {\n "a": {"patient_summary": 1},\t"patient_problems" : []}',
    ],
)
def test_a_signed_payload_naming_a_registered_key_is_read(text, compress):
    raw = signed(text, compress=compress)
    data, keys = holding(raw)
    assert data == verified(raw)
    assert keys == get_registry().patient_keys(data)
    assert keys


@pytest.mark.parametrize("compress", [False, True])
def test_a_payload_naming_a_registered_key_with_a_bad_signature_is_undecodable(compress):
    raw = signed(json.dumps(PATIENT), compress=compress)
    value, signature = raw.rsplit(":", 1)
    for forged in (
        f"{value}:{signature[:-1]}{'A' if signature[-1] != 'A' else 'B'}",
        f"{value}:",
        signed(json.dumps(PATIENT), compress=compress, key="another-key-" + "x" * 50),
        f"{value.rsplit(':', 1)[0]}:notatime:{signature}",
    ):
        with pytest.raises(Undecodable):
            holding(forged)


def test_a_fallback_key_is_honoured_as_django_does():
    old = "an-old-key-" + "y" * 50
    raw = signed(json.dumps(PATIENT), compress=True, key=old)
    with override_settings(SECRET_KEY_FALLBACKS=[old]):
        assert holding(raw)[0] == PATIENT
    with pytest.raises(Undecodable):
        holding(raw)


def test_a_payload_larger_than_the_peek_limit_goes_the_verified_way():
    big = {"patient_cda_SYNTH1": "x" * (PEEK_LIMIT + 10)}
    raw = signed(json.dumps(big), compress=True)
    data, keys = holding(raw)
    assert (data, keys) == (big, ["patient_cda_SYNTH1"])
    value, _ = raw.rsplit(":", 1)
    with pytest.raises(Undecodable):
        holding(f"{value}:forged")


@pytest.mark.parametrize(
    "raw",
    [
        "tampered:blob",
        "nothing",
        "",
        signed("[1, 2]"),
        signed(b"\xff\xfe not json"),
        signed('{"patient_summary": '),
        signed("[" * 100_000 + "]" * 100_000, compress=True),
        "." + "!" * 40 + ":abc:def",
    ],
)
def test_what_does_not_parse_never_yields_data(raw):
    try:
        result = holding(raw)
    except Undecodable:
        with pytest.raises(Undecodable):
            verified(raw)
        return
    assert result == (None, [])


def test_a_payload_naming_no_registered_key_is_skipped_unverified():
    good = signed(json.dumps({"note": "patient_summary", "patient": "not a registered key"}))
    forged = good.rsplit(":", 1)[0] + ":forged"
    assert holding(good) == (None, [])
    # Django would load it as an empty session: no patient data either way.
    assert holding(forged) == (None, [])


class CustomSerializer(signing.JSONSerializer):
    """JSON too, but not Django's class: no payload is read before its signature."""


def test_serializers_other_than_django_json_are_never_read_unverified():
    with override_settings(SESSION_SERIALIZER=f"{__name__}.CustomSerializer"):
        backend = backend_for("patient_data.sessions.db")
    assert backend.peekable is False
    raw = signed(json.dumps({"note": "x"})).rsplit(":", 1)[0] + ":forged"
    with pytest.raises(Undecodable):
        backend.holding(raw, get_registry())
    assert backend_for("patient_data.sessions.db").peekable is True


KEYS = st.sampled_from(
    ["note", "patient", "_auth_user_id", "patient_summary", "current_patient_id", "patient_cda_"]
) | st.text(max_size=8)
SESSIONS = st.dictionaries(KEYS, st.integers() | st.text(max_size=20), max_size=6)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    session=SESSIONS,
    compress=st.booleans(),
    corruption=CORRUPTIONS,
)
def test_no_row_holding_patient_data_is_ever_skipped(session, compress, corruption):
    raw = corrupted(
        signed(json.dumps(session, separators=(",", ":")), compress=compress), *corruption
    )
    try:
        expected = verified(raw)
    except Undecodable:
        expected = None
    registry = get_registry()
    try:
        data, keys = holding(raw)
    except Undecodable:
        # Only what Django cannot read either.
        assert expected is None
        return
    if expected is not None and registry.patient_keys(expected):
        assert (data, keys) == (expected, registry.patient_keys(expected))
    else:
        # Skipped: Django reads no patient data from it (nothing, or a dict without any).
        assert (data, keys) == (None, [])


@pytest.mark.django_db
@pytest.mark.parametrize("engine", ["db"], indirect=True)
def test_a_forged_row_without_patient_data_is_left_alone_and_one_with_is_removed(engine):
    from django.contrib.sessions.models import Session

    plain = make_session(engine, patient=False)
    holder = make_session(engine)
    for key in (plain, holder):
        row = Session.objects.get(session_key=key)
        Session.objects.filter(session_key=key).update(
            session_data=row.session_data.rsplit(":", 1)[0] + ":forged"
        )
    code, out = run("cleanup_patient_sessions", "--force")
    assert code == 0
    assert "1 undecodable sessions (1 removed)." in out
    assert Session.objects.filter(session_key=plain).exists()
    assert not Session.objects.filter(session_key=holder).exists()
