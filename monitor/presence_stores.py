"""Where presence is kept: Redis when ``REDIS_URL`` is set, the database otherwise.

Both stores keep the same three things: live processes (``pid -> expires_at``, moved ahead by
each heartbeat), open sockets (``socket -> session, process``), and due sessions
(``session -> due_at``: its last socket closed, or its sockets' process stopped beating).
A socket counts while its process is alive. Every step is atomic (one Lua script, or one
database transaction), and ``reap`` removes each due session from the store as it claims it,
so of several processes reaping at once exactly one gets it.

Times are wall-clock seconds passed in by the caller (the hosts' clocks must agree to well
within a heartbeat), so tests can move time without sleeping.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.db import transaction

from monitor.models import PresenceDue, PresenceProcess, PresenceSocket

#: Sessions claimed (and dead processes dropped) per reap call: bounds one step's work.
REAP_LIMIT = 500


@dataclass(frozen=True)
class Reaped:
    """What one reap step found: sessions this process must clear, and the next due time."""

    claimed: list[str]
    next_due: float | None


class PresenceStore(ABC):
    """The operations presence needs; each is atomic in the store."""

    @abstractmethod
    async def join(
        self, ref: str, socket_id: str, pid: str, now: float, ttl: float
    ) -> tuple[bool, int]:
        """Add a socket and beat for ``pid``; (was ``pid`` alive before, open sockets of ref)."""

    @abstractmethod
    async def leave(self, ref: str, socket_id: str, pid: str, now: float, grace: float) -> int:
        """Remove a socket; when none is left, ``ref`` is due at ``now + grace``."""

    @abstractmethod
    async def count(self, ref: str, now: float) -> int:
        """Open sockets of ``ref`` whose process is alive."""

    @abstractmethod
    async def beat(self, pid: str, now: float, ttl: float) -> bool:
        """Keep ``pid`` alive until ``now + ttl``; False when it was not alive any more."""

    @abstractmethod
    async def register(
        self, pid: str, sockets: dict[str, str], now: float, ttl: float, grace: float
    ) -> None:
        """Make ``sockets`` (socket -> ref) exactly the sockets of ``pid``; a session that lost
        its last socket by this is due at ``now + grace``."""

    @abstractmethod
    async def reap(self, now: float, grace: float) -> Reaped:
        """Drop dead processes (their sessions due at expiry + grace) and claim due sessions."""

    async def close(self) -> None:  # noqa: B027 - optional: only Redis holds connections
        """Release connections (nothing to do for the database)."""


# A socket counts while its process's expiry is ahead of ``now``.
_LIVE = """
local function live(P, ref, now)
  local n = 0
  for _, pid in ipairs(redis.call('HVALS', P .. ':sess:' .. ref)) do
    local exp = redis.call('ZSCORE', P .. ':procs', pid)
    if exp and tonumber(exp) > now then n = n + 1 end
  end
  return n
end
local function alive(P, pid, now)
  local exp = redis.call('ZSCORE', P .. ':procs', pid)
  return (exp and tonumber(exp) > now) and 1 or 0
end
"""

_JOIN = (
    _LIVE
    + """
local P, ref, sid, pid = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now, ttl = tonumber(ARGV[5]), tonumber(ARGV[6])
local was = alive(P, pid, now)
redis.call('ZADD', P .. ':procs', now + ttl, pid)
redis.call('HSET', P .. ':sess:' .. ref, sid, pid)
redis.call('HSET', P .. ':proc:' .. pid, sid, ref)
redis.call('ZREM', P .. ':due', ref)
return {was, live(P, ref, now)}
"""
)

_LEAVE = (
    _LIVE
    + """
local P, ref, sid, pid = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now, grace = tonumber(ARGV[5]), tonumber(ARGV[6])
redis.call('HDEL', P .. ':sess:' .. ref, sid)
redis.call('HDEL', P .. ':proc:' .. pid, sid)
local n = live(P, ref, now)
if n == 0 then redis.call('ZADD', P .. ':due', now + grace, ref) end
return n
"""
)

_COUNT = _LIVE + "return live(ARGV[1], ARGV[2], tonumber(ARGV[3]))"

_BEAT = (
    _LIVE
    + """
local P, pid, now, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local was = alive(P, pid, now)
redis.call('ZADD', P .. ':procs', now + ttl, pid)
return was
"""
)

_REGISTER = (
    _LIVE
    + """
local P, pid = ARGV[1], ARGV[2]
local now, ttl, grace = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local proc = P .. ':proc:' .. pid
local old = redis.call('HGETALL', proc)
redis.call('DEL', proc)
for i = 1, #old, 2 do redis.call('HDEL', P .. ':sess:' .. old[i + 1], old[i]) end
redis.call('ZADD', P .. ':procs', now + ttl, pid)
for i = 6, #ARGV, 2 do
  redis.call('HSET', P .. ':sess:' .. ARGV[i + 1], ARGV[i], pid)
  redis.call('HSET', proc, ARGV[i], ARGV[i + 1])
  redis.call('ZREM', P .. ':due', ARGV[i + 1])
end
for i = 1, #old, 2 do
  if live(P, old[i + 1], now) == 0 then redis.call('ZADD', P .. ':due', now + grace, old[i + 1]) end
end
return 1
"""
)

_REAP = (
    _LIVE
    + """
local P, now, grace, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local procs, due = P .. ':procs', P .. ':due'
local dead = redis.call('ZRANGEBYSCORE', procs, '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit)
for i = 1, #dead, 2 do
  local proc = P .. ':proc:' .. dead[i]
  local sockets = redis.call('HGETALL', proc)
  redis.call('DEL', proc)
  redis.call('ZREM', procs, dead[i])
  for j = 1, #sockets, 2 do
    local ref = sockets[j + 1]
    redis.call('HDEL', P .. ':sess:' .. ref, sockets[j])
    if live(P, ref, now) == 0 then
      redis.call('ZADD', due, tonumber(dead[i + 1]) + grace, ref)
    end
  end
end
local claimed = {}
for _, ref in ipairs(redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, limit)) do
  redis.call('ZREM', due, ref)
  if live(P, ref, now) == 0 then claimed[#claimed + 1] = ref end
end
local nxt = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')
return {claimed, nxt[2] or ''}
"""
)


class RedisStore(PresenceStore):
    """Presence in Redis under ``<prefix>:presence:*``, one Lua script per step."""

    def __init__(self, url: str, prefix: str, *, max_connections: int = 50) -> None:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        from monitor.layers import blocking_pool

        # Blocking pool: a thousand sockets opening or closing at once queue for a connection
        # instead of failing (TRAPS: redis-py's default pool raises when it runs out); it
        # replaces the connections a Redis restart closed (patient_data.redis_pools). No retries and
        # short timeouts: presence fails soft and fast when Redis is away.
        pool = blocking_pool(
            url,
            max_connections=max_connections,
            timeout=5,
            socket_timeout=5,
            socket_connect_timeout=1,
            retry=Retry(NoBackoff(), 0),
        )
        self.client = Redis(connection_pool=pool)
        self.prefix = f"{prefix}:presence"
        self._scripts = {
            name: self.client.register_script(source)
            for name, source in (
                ("join", _JOIN),
                ("leave", _LEAVE),
                ("count", _COUNT),
                ("beat", _BEAT),
                ("register", _REGISTER),
                ("reap", _REAP),
            )
        }

    async def _run(self, name: str, *args: object):
        return await self._scripts[name](args=[self.prefix, *args])

    async def join(self, ref, socket_id, pid, now, ttl):
        was, count = await self._run("join", ref, socket_id, pid, repr(now), repr(ttl))
        return bool(was), int(count)

    async def leave(self, ref, socket_id, pid, now, grace):
        return int(await self._run("leave", ref, socket_id, pid, repr(now), repr(grace)))

    async def count(self, ref, now):
        return int(await self._run("count", ref, repr(now)))

    async def beat(self, pid, now, ttl):
        return bool(await self._run("beat", pid, repr(now), repr(ttl)))

    async def register(self, pid, sockets, now, ttl, grace):
        pairs = [item for pair in sockets.items() for item in pair]
        await self._run("register", pid, repr(now), repr(ttl), repr(grace), *pairs)

    async def reap(self, now, grace):
        claimed, next_due = await self._run("reap", repr(now), repr(grace), REAP_LIMIT)
        return Reaped(
            claimed=[ref.decode() for ref in claimed],
            next_due=float(next_due) if next_due else None,
        )

    async def close(self) -> None:
        await self.client.aclose()


def _live(ref: str, now: float) -> int:
    return PresenceSocket.objects.filter(session_ref=ref, process__expires_at__gt=now).count()


def _mark_due(refs: dict[str, float], now: float) -> None:
    """``refs`` (ref -> due time) whose sessions have no open socket left become due."""
    rows = [
        PresenceDue(session_ref=ref, due_at=at) for ref, at in refs.items() if not _live(ref, now)
    ]
    PresenceDue.objects.bulk_create(
        rows, update_conflicts=True, unique_fields=["session_ref"], update_fields=["due_at"]
    )


def _beat(pid: str, now: float, ttl: float) -> bool:
    was = PresenceProcess.objects.filter(pk=pid, expires_at__gt=now).exists()
    PresenceProcess.objects.bulk_create(
        [PresenceProcess(process_id=pid, expires_at=now + ttl)],
        update_conflicts=True,
        unique_fields=["process_id"],
        update_fields=["expires_at"],
    )
    return was


def _add_sockets(pid: str, sockets: dict[str, str]) -> None:
    PresenceSocket.objects.bulk_create(
        [
            PresenceSocket(socket_id=sid, session_ref=ref, process_id=pid)
            for sid, ref in sockets.items()
        ],
        update_conflicts=True,
        unique_fields=["socket_id"],
        update_fields=["session_ref", "process"],
    )
    PresenceDue.objects.filter(session_ref__in=set(sockets.values())).delete()


class DatabaseStore(PresenceStore):
    """Presence in three small tables of the ``monitor`` app, one transaction per step."""

    @staticmethod
    def _join(ref: str, socket_id: str, pid: str, now: float, ttl: float) -> tuple[bool, int]:
        with transaction.atomic():
            was = _beat(pid, now, ttl)
            _add_sockets(pid, {socket_id: ref})
            return was, _live(ref, now)

    @staticmethod
    def _leave(ref: str, socket_id: str, pid: str, now: float, grace: float) -> int:
        with transaction.atomic():
            PresenceSocket.objects.filter(pk=socket_id, process_id=pid).delete()
            count = _live(ref, now)
            if not count:
                _mark_due({ref: now + grace}, now)
            return count

    @staticmethod
    def _beat(pid: str, now: float, ttl: float) -> bool:
        with transaction.atomic():
            return _beat(pid, now, ttl)

    @staticmethod
    def _register(pid: str, sockets: dict[str, str], now: float, ttl: float, grace: float):
        with transaction.atomic():
            _beat(pid, now, ttl)
            gone = PresenceSocket.objects.filter(process_id=pid).exclude(pk__in=list(sockets))
            refs = set(gone.values_list("session_ref", flat=True))
            gone.delete()
            _add_sockets(pid, sockets)
            _mark_due(dict.fromkeys(refs, now + grace), now)

    @staticmethod
    def _reap(now: float, grace: float) -> Reaped:
        dead = PresenceProcess.objects.filter(expires_at__lte=now).order_by("expires_at")
        for process in dead[:REAP_LIMIT]:
            with transaction.atomic():
                refs = set(process.sockets.values_list("session_ref", flat=True))
                # Only if still dead: it may have beaten since it was listed.
                if PresenceProcess.objects.filter(pk=process.pk, expires_at__lte=now).delete()[0]:
                    _mark_due(dict.fromkeys(refs, process.expires_at + grace), now)
        claimed = []
        for due in PresenceDue.objects.filter(due_at__lte=now).order_by("due_at")[:REAP_LIMIT]:
            with transaction.atomic():
                # The delete is the claim: of two reapers, one deletes the row, the other none.
                mine = PresenceDue.objects.filter(pk=due.pk, due_at__lte=now).delete()[0]
                if mine and not _live(due.session_ref, now):
                    claimed.append(due.session_ref)
        following = PresenceDue.objects.order_by("due_at").values_list("due_at", flat=True).first()
        return Reaped(claimed=claimed, next_due=following)

    async def join(self, ref, socket_id, pid, now, ttl):
        return await sync_to_async(self._join)(ref, socket_id, pid, now, ttl)

    async def leave(self, ref, socket_id, pid, now, grace):
        return await sync_to_async(self._leave)(ref, socket_id, pid, now, grace)

    async def count(self, ref, now):
        return await sync_to_async(_live)(ref, now)

    async def beat(self, pid, now, ttl):
        return await sync_to_async(self._beat)(pid, now, ttl)

    async def register(self, pid, sockets, now, ttl, grace):
        await sync_to_async(self._register)(pid, sockets, now, ttl, grace)

    async def reap(self, now, grace):
        return await sync_to_async(self._reap)(now, grace)
