"""The mixin that puts patient_data.guard in front of a session store's save."""

from __future__ import annotations

from asgiref.sync import sync_to_async

from patient_data import guard
from patient_data.registry import get_registry


class GuardedSessionMixin:
    """Saves of blobs carrying patient data go through the cleanup-generation lock."""

    #: True when the blob lives in the client: a cleaned session must still be sent out.
    client_side = False
    #: True when a copy written before a cleanup can come back on a later load (a cookie from
    #: an older response, a cache refilled from a row read just before a bulk sweep): such
    #: stores compare the generation on the way in, not only when saving.
    verify_generation_on_load = False

    def save(self, must_create: bool = False) -> None:
        data = self._get_session(no_load=must_create)
        return guard.guarded_save(
            data,
            lambda: super(GuardedSessionMixin, self).save(must_create),
            self.session_key,
            client_side=self.client_side,
        )

    def save_unguarded(self, must_create: bool = False) -> None:
        """Write the blob as it is (the caller holds the generation lock)."""
        return super().save(must_create)

    async def asave(self, must_create: bool = False) -> None:
        data = await self._aget_session(no_load=must_create)
        if not get_registry().patient_keys(list(data)):
            return await super().asave(must_create)
        # The guard's row lock is a transaction: that part runs in the sync world.
        return await sync_to_async(self.save)(must_create)
