"""Server-pushed timeouts: one timer per session per process, while it has sockets here.

The timer sleeps until the next deadline of ``policy.deadlines`` (minus the warning), then
loads the session as stored now and lets ``enforcement.aenforce`` judge it exactly as the
middleware would: activity recorded by any process in the meantime has simply moved the
deadline, and the timer sleeps again until the new one. Activity wakes it only while it has
warned (``activity``): activity only moves deadlines later (idle, max-inactive), so before a
warning the wait for the earlier warning time is never too long, and a click costs no session
load in the processes holding the page's sockets; after a warning the timer sleeps until the
deadline itself, and the new warning may be due before that. ``session.stored`` wakes it (new
patient data brings deadlines of its own, possibly earlier), and an epoch advance wakes them
all; a cleanup does not: it only removes deadlines or ends the session.

The sockets of a session in this process are kept here too (``sockets_of``): the timer warns
them directly, and ``monitor.fanout`` hands them bulk cleanups.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any, Protocol

from django.contrib.auth import SESSION_KEY

from monitor import protocol
from monitor.sessions import SessionTarget
from patient_data import enforcement, policy
from patient_data.conf import conf
from patient_data.enforcement import facts

logger = logging.getLogger("monitor.timers")

#: A deadline is acted on this long after it passed, so the judge sees it as reached.
SLACK = 0.05
STOP = -1.0


class Socket(Protocol):
    async def push(self, text: str) -> None: ...

    async def lost(self) -> None: ...


class SessionTimer:
    """One session's deadlines in this process. No task of its own while it waits: the
    event loop's timer heap holds one handle per session (``call_later``), and a short task
    runs each look. A thousand open sessions cost a thousand handles, not a thousand
    sleeping tasks."""

    __slots__ = (
        "_again",
        "_first",
        "_handle",
        "_look",
        "_loop",
        "_stopped",
        "ref",
        "session_key",
        "sockets",
        "warned",
        "warning",
    )

    def __init__(self, ref: str, session_key: str, first: SessionTarget | None = None) -> None:
        self.ref = ref
        self.session_key = session_key
        #: The handshake's session and user, judged by the first step instead of a reload.
        self._first = first
        self.sockets: set[Socket] = set()
        #: The deadline each socket was last warned of (a tab opened later is warned too).
        self.warned: dict[Socket, float] = {}
        #: Its last look warned: it sleeps until the deadline, not until the warning time.
        self.warning = False
        self._loop = asyncio.get_running_loop()
        self._handle: asyncio.TimerHandle | None = None
        self._look: asyncio.Task | None = None
        self._again = False  # woken while looking: look once more
        self._stopped = False

    def current(self) -> bool:
        """Still running on this event loop (tests run one loop per test)."""
        return not self._stopped and self._loop is asyncio.get_running_loop()

    def wake(self) -> None:
        """Look again now (once the look under way, if any, is done)."""
        if self._stopped or self._loop.is_closed():  # a finished test's loop
            return
        if self._look is not None:
            self._again = True
            return
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._look = self._loop.create_task(self._run())

    def stop(self) -> None:
        self._stopped = True
        if self._handle is not None:
            self._handle.cancel()
        if self._look is not None:
            self._look.cancel()

    async def _run(self) -> None:
        delay = math.inf
        try:
            while self.sockets and not self._stopped:
                self._again = False
                try:
                    delay = await self._step(time.time())
                except Exception as exc:  # noqa: BLE001 - a failed look is retried, never fatal
                    logger.warning("Session timer failed (%s); retrying.", type(exc).__name__)
                    delay = conf.PATIENT_PRESENCE_HEARTBEAT
                if delay == STOP:
                    self._stopped = True
                    return
                if not self._again:
                    break
        finally:
            self._look = None
        if self.sockets and not self._stopped and not math.isinf(delay):
            self._handle = self._loop.call_later(delay, self.wake)

    async def _step(self, now: float) -> float:
        """Judge the stored session now; how long to sleep (inf: until woken, STOP: done)."""
        target, self._first = self._first or SessionTarget(self.session_key), None
        verdict = await enforcement.aenforce(target, source="socket_timer")
        if verdict.action == policy.END:
            return STOP  # the cleanup service's session.ended closes the sockets
        data = await target.adata()
        if SESSION_KEY not in data:
            for socket in list(self.sockets):
                await socket.lost()
            return STOP
        deadline = policy.next_deadline(facts(data, now))
        self.warning = False
        if deadline is None:
            return math.inf
        warn_at = deadline.at - conf.PATIENT_TIMEOUT_WARNING
        if now < warn_at:
            return warn_at - now
        self.warning = True
        warning = protocol.frame(
            "session.timeout_warning",
            session=self.ref,
            seconds_left=max(0.0, round(deadline.at - now, 1)),
            reason=deadline.verdict.reason,
        )
        for socket in list(self.sockets):
            if self.warned.get(socket) != deadline.at:
                self.warned[socket] = deadline.at
                await socket.push(warning)
        return max(0.0, deadline.at - now) + SLACK


_timers: dict[str, SessionTimer] = {}


def attach(ref: str, session_key: str, socket: Socket, loaded: SessionTarget | None = None) -> None:
    """Count ``socket`` among the session's sockets here, starting its timer if needed
    (``loaded``: the session and user the socket's handshake has just loaded)."""
    timer = _timers.get(ref)
    if timer is None or not timer.current():
        timer = _timers[ref] = SessionTimer(ref, session_key, loaded)
    timer.sockets.add(socket)
    timer.wake()


def detach(ref: str, socket: Socket) -> None:
    timer = _timers.get(ref)
    if timer is None:
        return
    timer.sockets.discard(socket)
    timer.warned.pop(socket, None)
    if not timer.sockets:
        timer.stop()
        del _timers[ref]


def wake(ref: str) -> None:
    """Something that may bring a deadline closer happened to the session: look again now."""
    if (timer := _timers.get(ref)) is not None:
        timer.wake()


def activity(ref: str) -> None:
    """Activity was recorded for the session: its deadlines moved later. A timer that has
    warned looks again now (the next warning may be due before the deadline it waits for);
    any other finds the new deadlines when it wakes."""
    if (timer := _timers.get(ref)) is not None and timer.warning:
        timer.wake()


def wake_all() -> None:
    for timer in _timers.values():
        timer.wake()


def sockets_of(ref: str) -> set[Any]:
    timer = _timers.get(ref)
    return set(timer.sockets) if timer is not None else set()
