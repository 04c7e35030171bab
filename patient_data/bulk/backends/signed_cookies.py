"""``signed_cookies`` sessions live in the browsers: nothing server-side to enumerate.

The sweep advances the server-side patient-data epoch instead; the middleware drops patient
data from every session stamped with an older epoch at its next request.
"""

from __future__ import annotations

from collections.abc import Iterator

from patient_data.bulk.backends.base import Backend, Stored


class SignedCookieBackend(Backend):
    name = "signed_cookies"
    enumerable = False

    def pages(self, size: int) -> Iterator[list[Stored]]:
        return iter(())

    def fetch(self, keys: list[str]) -> dict[str, Stored]:
        return {}

    def apply(self, updates: list[tuple[Stored, dict]], deletes: list[Stored]) -> set[str]:
        raise NotImplementedError("Signed-cookie sessions cannot be written from the server.")
