"""Presence: how many sockets each session has open, across processes, and tab-close cleanup.

The consumer calls :func:`ajoin` after accepting a socket and :func:`aleave` when it closes.
When a session's last socket closed and none came back within ``PATIENT_DISCONNECT_GRACE``
seconds (a reload or a link to the next page reconnects well within it), one process claims
the session and clears its patient data through the cleanup service (reason
``browser_closed``, source ``presence``). Counts live in Redis when ``REDIS_URL`` is set, in
the database otherwise (``monitor/presence_stores.py``); never in channel-layer groups, whose
memberships outlive a killed process for ``group_expiry``.

Each process beats every ``PATIENT_PRESENCE_HEARTBEAT`` seconds; its sockets stop counting
two heartbeats after its last beat, so the sessions of a killed process are cleared by
another process at most two heartbeats plus the grace after the kill. The beat and the reaper
are one background task per process, started by the first join (daphne has no lifespan
events).

The store failing (Redis down) only degrades the live view: calls log a warning and answer
from this process's own sockets, and the reaper claims nothing until the store has answered
continuously for longer than the expiry plus the grace, so sockets torn down by the outage
have reconnected and joined again before any session is judged closed. After a failure the
process registers its sockets anew, so what changed meanwhile is caught up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from django.conf import settings

from monitor.presence_stores import DatabaseStore, PresenceStore, RedisStore
from patient_data.conf import conf

logger = logging.getLogger("monitor.presence")

#: Missed heartbeats after which a process's sockets stop counting.
EXPIRY_BEATS = 2
REASON = "browser_closed"
SOURCE = "presence"

Clear = Callable[[str], Awaitable[object]]


async def clear_closed(ref: str) -> object:
    """What the reaper does with a claimed session: the one cleanup service, by its ref."""
    from patient_data import index

    return await index.aclear_by_ref(ref, reason=REASON, source=SOURCE)


def default_store() -> PresenceStore:
    if settings.REDIS_URL:
        return RedisStore(settings.REDIS_URL, getattr(settings, "REDIS_PREFIX", "ncp"))
    return DatabaseStore()


class Presence:
    """This process's view: its own sockets, and the background beat + reaper."""

    def __init__(
        self,
        store: PresenceStore,
        *,
        clear: Clear = clear_closed,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.clear = clear
        self.clock = clock
        self.process_id = uuid.uuid4().hex
        self.sockets: dict[str, str] = {}  # socket id -> session ref
        # socket id -> the task serving that socket (daphne runs one per connection)
        self.owners: dict[str, asyncio.Task | None] = {}
        self.reachable_since: float | None = None  # None while the store fails
        self.failing = False
        self.stale = True  # the store may have missed our joins/leaves: register anew
        self.task: asyncio.Task | None = None

    @property
    def heartbeat(self) -> float:
        return float(conf.PATIENT_PRESENCE_HEARTBEAT)

    @property
    def ttl(self) -> float:
        return EXPIRY_BEATS * self.heartbeat

    @property
    def grace(self) -> float:
        return float(conf.PATIENT_DISCONNECT_GRACE)

    def _local_count(self, ref: str) -> int:
        return sum(1 for owner in self.sockets.values() if owner == ref)

    def _reachable(self) -> None:
        if self.reachable_since is None:
            self.reachable_since = self.clock()
        if self.failing:
            self.failing = False
            logger.info("Presence store reachable again.")

    def _unreachable(self, action: str, exc: BaseException) -> None:
        # One warning per outage, not one per socket.
        if not self.failing:
            logger.warning(
                "Presence store unavailable (%s: %s); counting this process's sockets only.",
                action,
                type(exc).__name__,
            )
        self.failing = True
        self.reachable_since = None
        self.stale = True

    def may_reap(self) -> bool:
        """Only once the store has answered for longer than expiry + grace (the outage rule)."""
        if self.reachable_since is None:
            return False
        return self.clock() - self.reachable_since > self.ttl + self.grace

    async def join(self, ref: str, socket_id: str) -> int:
        self.sockets[socket_id] = ref
        self.owners[socket_id] = asyncio.current_task()
        self.start()
        try:
            was_alive, count = await self.store.join(
                ref, socket_id, self.process_id, self.clock(), self.ttl
            )
            if not was_alive or self.stale:
                await self._register()
                count = await self.store.count(ref, self.clock())
        except Exception as exc:  # noqa: BLE001 - presence failing never breaks the socket
            self._unreachable("join", exc)
            return self._local_count(ref)
        self._reachable()
        return count

    async def leave(self, ref: str, socket_id: str) -> int:
        self.sockets.pop(socket_id, None)
        self.owners.pop(socket_id, None)
        try:
            count = await self.store.leave(
                ref, socket_id, self.process_id, self.clock(), self.grace
            )
        except Exception as exc:  # noqa: BLE001
            self._unreachable("leave", exc)
            return self._local_count(ref)
        self._reachable()
        return count

    async def count(self, ref: str) -> int:
        try:
            count = await self.store.count(ref, self.clock())
        except Exception as exc:  # noqa: BLE001
            self._unreachable("count", exc)
            return self._local_count(ref)
        self._reachable()
        return count

    async def _register(self) -> None:
        await self.store.register(
            self.process_id, dict(self.sockets), self.clock(), self.ttl, self.grace
        )
        self.stale = False

    async def _leave_vanished(self) -> None:
        """Sockets whose connection ended without a leave (a consumer that crashed, e.g. when
        the channel layer failed, never runs its disconnect handler) leave now."""
        for socket_id, owner in list(self.owners.items()):
            if owner is not None and owner.done() and socket_id in self.sockets:
                await self.leave(self.sockets[socket_id], socket_id)

    async def tick(self) -> float | None:
        """One beat and, when allowed, one reap; returns the next due time, if any."""
        await self._leave_vanished()
        try:
            if not await self.store.beat(self.process_id, self.clock(), self.ttl) or self.stale:
                await self._register()
            self._reachable()
            if not self.may_reap():
                return None
            reaped = await self.store.reap(self.clock(), self.grace)
        except Exception as exc:  # noqa: BLE001 - the loop must outlive any outage
            self._unreachable("heartbeat", exc)
            return None
        for ref in reaped.claimed:
            try:
                await self.clear(ref)
            except Exception as exc:  # noqa: BLE001 - one session failing never stops the reaper
                # The type only: an exception's text may quote session content.
                logger.error("Presence could not clear session %s (%s).", ref, type(exc).__name__)
        return reaped.next_due

    async def run(self) -> None:
        """Beat and reap forever: at least twice per heartbeat, and right at the next due time."""
        while True:
            next_due = await self.tick()
            pause = self.heartbeat / 2
            if next_due is not None:
                pause = min(pause, max(next_due - self.clock(), 0.05))
            await asyncio.sleep(pause)

    def start(self) -> None:
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self.run(), name="presence")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
        await self.store.close()


_by_loop: dict[asyncio.AbstractEventLoop, Presence] = {}


def current() -> Presence:
    """This process's presence in the running event loop (daphne has one; each test its own)."""
    loop = asyncio.get_running_loop()
    if loop not in _by_loop:
        for old in [old for old in _by_loop if old.is_closed()]:
            del _by_loop[old]
        _by_loop[loop] = Presence(default_store())
    return _by_loop[loop]


async def ajoin(session_ref: str, socket_id: str) -> int:
    """A socket of ``session_ref`` opened; returns its open sockets in every process."""
    return await current().join(session_ref, socket_id)


async def aleave(session_ref: str, socket_id: str) -> int:
    """A socket closed; returns the sockets left (at 0 the grace period starts)."""
    return await current().leave(session_ref, socket_id)


async def acount(session_ref: str) -> int:
    """Open sockets of ``session_ref`` in every process."""
    return await current().count(session_ref)


async def astop() -> None:
    """Stop the beat and reaper of the running loop and release the store (tests, shutdown)."""
    presence = _by_loop.pop(asyncio.get_running_loop(), None)
    if presence is not None:
        await presence.stop()
