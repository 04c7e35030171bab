"""A socket's view of its Django session: a fresh load for every decision.

``scope["session"]`` is the handshake's snapshot, and Channels never saves it on a WebSocket;
whatever a socket decides (a command, a timer) it decides on the session as stored now.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth import SESSION_KEY, aget_user
from django.db import close_old_connections

from patient_data import index
from patient_data.refs import session_ref
from patient_data.rows import verified_user


@dataclass(frozen=True)
class Identity:
    """Who a socket belongs to: its user, its session key (never sent) and keyed ref."""

    user: Any
    session_key: str

    @property
    def ref(self) -> str:
        return session_ref(self.session_key)


class SessionTarget:
    """What the cleanup service and ``enforcement`` accept for a socket: a freshly loaded
    session and its user, as a request would carry them."""

    def __init__(self, session_key: str) -> None:
        self.session = index.store(session_key)
        self._user: Any = None
        # Receivers of ``user_logged_out`` (django-axes) read a request's META: a socket has
        # no HTTP request, so they see an empty one naming the socket's path.
        self.META: dict[str, str] = {"PATH_INFO": "/ws/patient-session/"}

    @classmethod
    def preloaded(cls, session_key: str, data: dict[str, Any], user: Any) -> SessionTarget:
        """A target whose session and user are the ones a handshake has just loaded (its
        timer's first judgment then needs no loads of its own)."""
        target = cls(session_key)
        target.session._session_cache = dict(data)
        target.session._as_loaded = dict(data)
        target._user = user
        return target

    async def auser(self) -> Any:
        if self._user is None:
            self._user = await aget_user(self)
        return self._user

    async def adata(self) -> dict[str, Any]:
        return dict(await self.session.aitems())

    def _open(self, identity: Identity) -> bool:
        close_old_connections()
        if str(self.session.get(SESSION_KEY)) != str(identity.user.pk):
            return False
        self._user = verified_user(self)  # auth.get_user's answer, the row read cheaper
        return bool(self._user.is_authenticated and self._user.is_active)

    async def aopen(self, identity: Identity) -> bool:
        """:meth:`abelongs_to` in one trip to the sync thread, which first closes its old
        database connections as Channels does before a handler: the session's load and its
        user's are two queries, not three hops."""
        return await sync_to_async(self._open)(identity)

    async def abelongs_to(self, identity: Identity) -> bool:
        """Whether the stored session is still signed in as the socket's user."""
        data = await self.adata()
        if str(data.get(SESSION_KEY)) != str(identity.user.pk):
            return False
        user = await self.auser()
        return bool(user.is_authenticated and user.is_active)
