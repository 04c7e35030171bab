"""The settings object: defaults, resolved once, and re-read when a setting changes."""

from __future__ import annotations

from django.test import override_settings

from patient_data.conf import conf


def test_defaults_without_any_setting(settings):
    # The project's settings set some of these from the environment: remove them.
    for name in ("PATIENT_SESSION_TIMEOUT", "PATIENT_MAX_INACTIVE_TIME", "PATIENT_SESSION_KEYS"):
        if hasattr(settings, name):
            delattr(settings, name)
    assert conf.PATIENT_SESSION_TIMEOUT == 30
    assert conf.PATIENT_MAX_INACTIVE_TIME == 60
    assert "patient_cda_" in conf.PATIENT_SESSION_KEY_PREFIXES
    assert conf.PATIENT_SESSION_KEYS[0] == "current_patient_id"


def test_a_changed_setting_is_seen_at_once_and_restored_after(settings):
    settings.PATIENT_SESSION_TIMEOUT = 11
    assert conf.PATIENT_SESSION_TIMEOUT == 11  # resolved (and kept) before the next change
    settings.PATIENT_SESSION_TIMEOUT = 5
    assert conf.PATIENT_SESSION_TIMEOUT == 5
    with override_settings(PATIENT_SESSION_TIMEOUT=7, PATIENT_SESSION_KEYS=["extra_key"]):
        assert conf.PATIENT_SESSION_TIMEOUT == 7
        assert conf.PATIENT_SESSION_KEYS[-1] == "extra_key"
    assert conf.PATIENT_SESSION_TIMEOUT == 5
    assert "extra_key" not in conf.PATIENT_SESSION_KEYS


def test_derived_values_follow_the_setting_they_derive_from():
    # Without PATIENT_SESSION_HASH_KEY the keyed hashes use SECRET_KEY: a new SECRET_KEY must
    # reach them, although the setting that changed is not one of ours.
    with override_settings(PATIENT_SESSION_HASH_KEY=None, SECRET_KEY="a" * 50):
        assert conf.PATIENT_SESSION_HASH_KEY == "a" * 50
        with override_settings(SECRET_KEY="b" * 50):
            assert conf.PATIENT_SESSION_HASH_KEY == "b" * 50
        assert conf.PATIENT_SESSION_HASH_KEY == "a" * 50
    with override_settings(STATIC_URL="/assets/"):
        assert conf.PATIENT_PASSIVE_PATH_PREFIXES == ("/assets/",)
