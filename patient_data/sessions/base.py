"""The mixin that puts patient_data.guard in front of a session store's save."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.sessions.backends.base import UpdateError

from patient_data import guard, revocation
from patient_data import meta as session_meta
from patient_data.registry import get_registry


def _holds_patient_data(data: dict[str, Any]) -> bool:
    return bool(get_registry().patient_keys(list(data)))


class GuardedSessionMixin:
    """Saves of blobs carrying patient data go through the cleanup-generation lock; an ended
    session is revoked; every async entry point stays async-safe with patient data."""

    #: True when the blob lives in the client: a cleaned session must still be sent out.
    client_side = False
    #: True when a copy written before a cleanup can come back on a later load (a cookie from
    #: an older response, a cache refilled from a row read just before a bulk sweep): such
    #: stores compare the generation on the way in, not only when saving.
    verify_generation_on_load = False
    #: True when Django's async load of this engine is a thread hop (``sync_to_async`` around
    #: the sync query or cache read): other reads can then share that hop.
    loads_in_thread = False
    #: Set for one request (``patient_data.middleware.auth``, ``patient_data.prefetch``):
    #: called in order in the async load's thread with the loaded data, so their reads cost no
    #: hop of their own. They may only read.
    load_companions: tuple[Callable[[dict[str, Any]], None], ...] = ()

    # What this request loaded (a shallow copy): a cleanup compares it with the stored
    # session to keep a concurrent request's changes (patient_data.cleanup).
    def load(self) -> dict[str, Any]:
        data = super().load()
        self._as_loaded = dict(data)
        return data

    async def aload(self) -> dict[str, Any]:
        if self.loads_in_thread and self.load_companions:
            return await sync_to_async(self._load_with_companions)()
        data = await super().aload()
        self._as_loaded = dict(data)
        return data

    def _load_with_companions(self) -> dict[str, Any]:
        data = self.load()  # the sync twin of the engine's aload: same reads, same outcome
        for companion in self.load_companions:
            companion(data)
        return data

    def stored_blob(self) -> dict[str, Any] | None:
        """The session as stored now (not as this request loaded it); None when it is gone."""
        fresh = self.__class__(self.session_key)
        data = fresh.load()
        return data if fresh.session_key == self.session_key else None

    async def astored_blob(self) -> dict[str, Any] | None:
        """Async twin of :meth:`stored_blob`."""
        fresh = self.__class__(self.session_key)
        data = await fresh.aload()
        return data if fresh.session_key == self.session_key else None

    def _gone_unloaded(self, loaded: bool, key: str | None) -> bool:
        # Django's engines raise UpdateError when a session that was never loaded is saved
        # after its stored form went away (SessionMiddleware: SessionInterrupted). Reading it
        # here first must not turn that into a new empty session.
        return not loaded and key is not None and self.session_key is None

    def save(self, must_create: bool = False) -> None:
        loaded, key = hasattr(self, "_session_cache"), self.session_key
        data = self._get_session(no_load=must_create)
        if self._gone_unloaded(loaded, key):
            raise UpdateError
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
        loaded, key = hasattr(self, "_session_cache"), self.session_key
        data = await self._aget_session(no_load=must_create)
        if self._gone_unloaded(loaded, key):
            raise UpdateError
        if not _holds_patient_data(data):
            return await super().asave(must_create)
        # The guard's row lock is a transaction: that part runs in the sync world.
        return await sync_to_async(self.save)(must_create)

    async def acreate(self) -> None:
        # Django's file and signed-cookie engines create through the sync save(), which takes
        # the guard's row lock when the session holds patient data (acycle_key does this).
        if _holds_patient_data(getattr(self, "_session_cache", {})):
            return await sync_to_async(self.create)()
        return await super().acreate()

    async def acycle_key(self) -> None:
        if _holds_patient_data(await self._aget_session()):
            return await sync_to_async(self.cycle_key)()
        return await super().acycle_key()

    # An ended session stays ended: its ref is revoked wherever a copy of it may still live.
    def flush(self) -> None:
        ref = session_meta.read(self._get_session()).get("ref")
        if ref:
            revocation.revoke(ref)
        super().flush()

    async def aflush(self) -> None:
        ref = session_meta.read(await self._aget_session()).get("ref")
        if ref:
            await revocation.arevoke(ref)
        await super().aflush()
