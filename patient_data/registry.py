"""What patient data is: session keys registered by exact name or declared prefix.

Nothing is found by substring. A key either is registered or it is not patient data;
everything the project stores about a patient goes through ``patient_data.patient_session``,
which refuses unregistered keys.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.core.signals import setting_changed
from django.dispatch import receiver

from patient_data.conf import conf

# Bookkeeping kept in the session next to the patient data: never patient data itself.
META_KEY = "_patient_meta"


class UnregisteredPatientKey(KeyError):
    """A patient value was offered under a key the registry does not know."""


@dataclass(frozen=True)
class Registry:
    keys: frozenset[str]
    prefixes: tuple[str, ...]

    def entry_for(self, key: str) -> str | None:
        """The registry entry covering ``key``: the key itself, ``prefix*``, or None.

        Audit rows and logs carry entries, never the full key: a prefixed key may embed
        a patient identifier (``patient_cda_<id>``).
        """
        if key in self.keys:
            return key
        for prefix in self.prefixes:
            if key.startswith(prefix):
                return prefix + "*"
        return None

    def is_patient_key(self, key: str) -> bool:
        return key in self.keys or key.startswith(self.prefixes)

    def patient_keys(self, keys: Iterable[str]) -> list[str]:
        """The keys among ``keys`` that hold patient data."""
        return [key for key in keys if key in self.keys or key.startswith(self.prefixes)]

    def entries(self, keys: Iterable[str]) -> list[str]:
        """Sorted, de-duplicated registry entries for the patient keys among ``keys``."""
        found = set()
        exact, prefixes = self.keys, self.prefixes
        for key in keys:  # entry_for, inlined: the bulk sweep calls this per cleaned session
            if key in exact:
                found.add(key)
                continue
            for prefix in prefixes:
                if key.startswith(prefix):
                    found.add(prefix + "*")
                    break
        return sorted(found)


_cache: Registry | None = None


def get_registry() -> Registry:
    """The registry for the current settings (built once, rebuilt when they change)."""
    global _cache
    if _cache is None:
        _cache = Registry(frozenset(conf.PATIENT_SESSION_KEYS), conf.PATIENT_SESSION_KEY_PREFIXES)
    return _cache


@receiver(setting_changed)
def _forget(setting: str, **kwargs) -> None:
    global _cache
    if setting in {"PATIENT_SESSION_KEYS", "PATIENT_SESSION_KEY_PREFIXES"}:
        _cache = None
