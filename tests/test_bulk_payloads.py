"""Django's signed session payloads as the bulk sweep writes and verifies them
(``patient_data.bulk.backends.payloads``): Django reads what it writes to the same dict, and it
accepts exactly the signatures Django accepts."""

from __future__ import annotations

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.core import signing
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patient_data.bulk.backends import Undecodable, backend_for
from patient_data.bulk.backends.payloads import SignedPayloads
from patient_data.registry import get_registry
from tests.bulk_support import CORRUPTIONS, corrupted

SALT = SessionStore().key_salt
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
SESSIONS = st.dictionaries(st.text(max_size=12), JSON, max_size=8)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(session=SESSIONS)
def test_django_loads_what_is_written_as_the_same_session(session):
    raw = SignedPayloads(SALT).dumps(session)
    assert SessionStore().decode(raw) == session
    assert signing.loads(raw, salt=SALT) == session
    # Signed as Django signs: the same signature over the same value and timestamp.
    value, signature = raw.rsplit(":", 1)
    assert signing.TimestampSigner(salt=SALT).signature(value) == signature


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    session=SESSIONS,
    compress=st.booleans(),
    corruption=CORRUPTIONS,
)
def test_a_signature_is_accepted_exactly_when_django_accepts_it(session, compress, corruption):
    _verified_as_django_verifies(
        corrupted(signing.dumps(session, salt=SALT, compress=compress), *corruption)
    )


def _verified_as_django_verifies(raw: str) -> None:
    try:
        signing.TimestampSigner(salt=SALT).unsign(raw)
    except Exception as exc:  # noqa: BLE001 - whatever Django raises, ours raises too
        with pytest.raises(type(exc)):
            SignedPayloads(SALT).verify(raw)
    else:
        SignedPayloads(SALT).verify(raw)


def test_fallback_keys_verify_and_the_current_key_signs():
    old = "an-old-key-" + "y" * 50
    session = {"note": "x"}
    raw = signing.dumps(session, key=old, salt=SALT, compress=True)
    with pytest.raises(signing.BadSignature):
        SignedPayloads(SALT).verify(raw)
    with override_settings(SECRET_KEY_FALLBACKS=[old]):
        payloads = SignedPayloads(SALT)
        payloads.verify(raw)
        written = payloads.dumps(session)
    # Written with SECRET_KEY: readable once the old key is gone.
    assert SessionStore().decode(written) == session


def test_a_backend_whose_sample_check_fails_keeps_djangos_own_calls(monkeypatch):
    session = {"note": "x" * 200}
    # Django compresses what compresses; the checked fast path never does.
    assert backend_for("patient_data.sessions.db").encode(session).startswith("eyJ")
    # A verify that accepts a forged signature fails the check.
    monkeypatch.setattr(SignedPayloads, "verify", lambda self, raw: None)
    backend = backend_for("patient_data.sessions.db")
    assert backend._signed is None
    assert backend.encode(session).startswith(".")
    # And Django's signer verifies: the forged row is refused, not accepted by the patch.
    raw = signing.dumps({"patient_summary": "SYNTH"}, salt=SALT, compress=True)
    assert backend.holding(raw, get_registry())[1] == ["patient_summary"]
    with pytest.raises(Undecodable):
        backend.holding(raw[:-1] + ("A" if raw[-1] != "A" else "B"), get_registry())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(timestamp=st.text(alphabet="09azAZ-:.é_ ", max_size=6))
def test_a_signed_value_of_any_timestamp_is_refused_exactly_when_django_refuses_it(timestamp):
    # Signed as TimestampSigner signs, whatever the timestamp: only its check can refuse it.
    _verified_as_django_verifies(signing.Signer(salt=SALT).sign(f"eyJhIjoxfQ:{timestamp}"))


def test_each_second_signs_with_its_own_timestamp(monkeypatch):
    payloads = SignedPayloads(SALT)
    for now, second in (
        (1_000_000.4, 1_000_000),
        (1_000_000.9, 1_000_000),
        (1_000_001.1, 1_000_001),
    ):
        monkeypatch.setattr("patient_data.bulk.backends.payloads.time.time", lambda now=now: now)
        raw = payloads.dumps({"n": 1})
        assert raw.split(":")[-2] == signing.b62_encode(second)
        assert signing.loads(raw, salt=SALT) == {"n": 1}
