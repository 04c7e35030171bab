"""Reads a view declares for the session's load hop: one thread hop for what a page needs.

Under ASGI every ORM query of an async view is a thread hop (Django's async ORM is
``sync_to_async`` around the sync one). The engines whose async load is itself a hop
(``GuardedSessionMixin.loads_in_thread``) already read the user in it
(``patient_data.middleware.auth``). A view whose next read depends only on the session and its
URL's arguments can declare that read too::

    def _patient_row(session_data, ref):          # runs in the session's load hop
        return {("patient", pid): find(pid)} ...  # only reads

    @prefetch(_patient_row)
    async def patient_summary(request, ref):
        ...                                        # the view decides, from the session as it
        patient = await prefetched(request, ("patient", pid), partial(afind, pid))

What the view uses is still its own decision: it works out the key from the session as it is
now (a middleware may have cleared it since the load) and takes the prefetched value only for
exactly that key, once; otherwise ``fetch`` runs, the same read in its own hop. A reader gets a
copy of the loaded data, must only read, and its values stay in the request (dropped with the
response) until the view takes them. A reader that fails costs nothing but the hop it would
have saved: it is logged by view name (never a value) and the view fetches.

The reader's view is found by resolving ``request.path_info`` against the request's URLconf;
nothing is resolved while no view declares a prefetch.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

from django.conf import settings
from django.http import HttpRequest
from django.urls import Resolver404, get_resolver

logger = logging.getLogger(__name__)

T = TypeVar("T")
Reader = Callable[..., dict[Hashable, Any]]

#: Attribute of a declaring view holding its reader.
READER_ATTR = "patient_data_prefetch"
#: Request attribute holding the values read in the session's hop, by key.
VALUES_ATTR = "_patient_data_prefetched"

_declared = False


def prefetch(reader: Reader) -> Callable[[Callable], Callable]:
    """Declare ``reader(session_data, **url_kwargs) -> {key: value}`` for the decorated view.

    The URL resolves to the outermost callable: put it outermost, or under decorators that
    use ``functools.wraps`` (which copies the declaration up).
    """

    def declare(view: Callable) -> Callable:
        global _declared
        setattr(view, READER_ATTR, reader)
        _declared = True
        return view

    return declare


def read_in_hop(request: HttpRequest, data: dict[str, Any]) -> None:
    """A session load companion: run the reader of the request's view, if it declares one."""
    if not _declared:
        return
    urlconf = getattr(request, "urlconf", None) or settings.ROOT_URLCONF
    try:
        match = get_resolver(urlconf).resolve(request.path_info)
    except Resolver404:
        return
    reader = getattr(match.func, READER_ATTR, None)
    if reader is None:
        return
    try:
        values = reader(dict(data), **match.kwargs)
    except Exception as exc:  # noqa: BLE001 - the view reads for itself instead
        logger.debug("Prefetch for %s failed (%s).", match.view_name, type(exc).__name__)
        return
    setattr(request, VALUES_ATTR, dict(values))


async def prefetched(request: HttpRequest, key: Hashable, fetch: Callable[[], Awaitable[T]]) -> T:
    """The value read for ``key`` in the session's hop (taken once), else ``await fetch()``."""
    values = getattr(request, VALUES_ATTR, None)
    if values and key in values:
        return values.pop(key)
    return await fetch()


def forget(request: HttpRequest) -> None:
    """Drop what the view did not take (called when the response is done)."""
    request.__dict__.pop(VALUES_ATTR, None)
