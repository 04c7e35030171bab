"""The store API: registered keys only, bookkeeping stamped, unchanged values not rewritten."""

from __future__ import annotations

import pytest

from patient_data import patient_session
from patient_data.registry import META_KEY
from patient_data.sessions.db import SessionStore


@pytest.fixture
def session(db):
    return SessionStore()


def test_first_store_stamps_the_bookkeeping(session):
    patient_session.store(session, "patient_summary", {"problems": ["SYNTH-P"]})
    meta = session[META_KEY]
    assert meta["since"] == meta["seen"]
    assert meta["gen"] == 0 and meta["epoch"] == 0 and len(meta["ref"]) == 32
    assert patient_session.patient_data_since(session) == meta["since"]


def test_storing_the_same_value_again_writes_nothing(session):
    patient_session.store(session, "patient_summary", {"problems": ["SYNTH-P"]})
    session.save()
    reloaded = SessionStore(session.session_key)
    patient_session.store(reloaded, "patient_summary", {"problems": ["SYNTH-P"]})
    assert reloaded.modified is False
    patient_session.store(reloaded, "patient_summary", {"problems": ["SYNTH-Q"]})
    assert reloaded.modified is True


async def test_async_twin_behaves_the_same(session):
    await patient_session.astore(session, "patient_summary", {"problems": ["SYNTH-P"]})
    first = dict(session[META_KEY])
    session.modified = False
    await patient_session.astore(session, "patient_summary", {"problems": ["SYNTH-P"]})
    assert session.modified is False
    await patient_session.astore(session, "patient_cda_SYN-XX-1", "<ClinicalDocument/>")
    assert session.modified is True
    assert session[META_KEY]["since"] == first["since"]  # the first store stays the start
