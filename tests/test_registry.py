"""What counts as patient data: registered keys and prefixes, never substrings."""

from __future__ import annotations

import pytest
from django.test import override_settings

from patient_data import patient_session
from patient_data.registry import UnregisteredPatientKey, get_registry
from patient_data.sessions.db import SessionStore


def test_exact_keys_and_prefixes():
    registry = get_registry()
    assert registry.is_patient_key("uploaded_cda_documents")
    assert registry.is_patient_key("prefill_search_form")
    assert registry.is_patient_key("patient_cda_SYN-XX-000001")
    assert registry.entry_for("patient_cda_SYN-XX-000001") == "patient_cda_*"


@pytest.mark.parametrize(
    "key", ["patient_theme", "my_patient_notes", "PATIENT_SUMMARY", "_auth_user_id"]
)
def test_substrings_are_not_patient_data(key):
    """Original defect 1: ``"patient" in key`` caught unrelated keys."""
    assert not get_registry().is_patient_key(key)


def test_settings_extend_the_defaults():
    with override_settings(
        PATIENT_SESSION_KEYS=["ward_list"], PATIENT_SESSION_KEY_PREFIXES=["lab_"]
    ):
        registry = get_registry()
        assert registry.is_patient_key("ward_list")
        assert registry.is_patient_key("lab_result_7")
        assert registry.is_patient_key("patient_summary")
    assert not get_registry().is_patient_key("ward_list")


def test_entries_hide_identifiers_in_prefixed_keys():
    keys = ["patient_cda_SYN-1", "patient_cda_SYN-2", "patient_summary", "note"]
    assert get_registry().entries(keys) == ["patient_cda_*", "patient_summary"]


def test_store_refuses_unregistered_keys():
    session = SessionStore()
    with pytest.raises(UnregisteredPatientKey, match="PATIENT_SESSION_KEYS"):
        patient_session.store(session, "patient_theme", "dark")
    assert "patient_theme" not in session
