"""No resurrection: a request that loaded the session before a cleanup cannot write it back.

Django saves the whole session blob and the last write wins. Every cleanup therefore bumps
a per-session *generation* (a row keyed by the random ``ref`` in the session's bookkeeping)
and writes the cleaned blob while holding that row locked. Every save of a blob that still
carries patient data takes the same lock and compares the blob's generation with the row:
a stale blob loses its patient keys (and keeps everything else) before it is written.

The lock is ``SELECT ... FOR UPDATE`` on PostgreSQL; on SQLite, IMMEDIATE transactions
(see ``ncp_asgi.env.sqlite_database``) serialise writers. Sessions without patient data never
touch this module's tables.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from django.db import IntegrityError, connections, router, transaction
from django.utils import timezone

from patient_data import indexing
from patient_data import meta as session_meta
from patient_data.models import PatientSessionState
from patient_data.registry import META_KEY, get_registry
from patient_data.server_binding import array_cursor

logger = logging.getLogger("patient_data.guard")


@contextmanager
def locked_state(ref: str) -> Iterator[PatientSessionState]:
    """The generation row for ``ref``, created if missing, locked until the block ends."""
    using = router.db_for_write(PatientSessionState)
    with transaction.atomic(using=using):
        rows = PatientSessionState.objects.using(using).select_for_update()
        try:
            state = rows.get(ref=ref)
        except PatientSessionState.DoesNotExist:
            try:
                with transaction.atomic(using=using):
                    state = PatientSessionState.objects.using(using).create(ref=ref)
            except IntegrityError:
                state = rows.get(ref=ref)
        yield state


@contextmanager
def cleaning(ref: str, *, bump: bool = True) -> Iterator[int]:
    """For a cleanup: the generation row for ``ref`` locked until the block ends (created if
    missing), a new generation started unless ``bump`` is False, and the session out of the
    index (a cleaned session holds no patient data); yields the generation.

    One statement (``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``, PostgreSQL and SQLite
    >= 3.35) where a lock, a read and an update took three; the block's writes share the
    transaction, and an exception out of the block rolls them all back, the new generation
    with them.
    """
    using = router.db_for_write(PatientSessionState)
    connection = connections[using]
    table = connection.ops.quote_name(PatientSessionState._meta.db_table)
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    bumped = f"generation = {table}.generation + 1, updated_at = excluded.updated_at, " * bump
    with transaction.atomic(using=using):
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} (ref, generation, updated_at) VALUES (%s, %s, %s) "  # noqa: S608 - table name from the model, values bound
                f"ON CONFLICT (ref) DO UPDATE SET {bumped}items = 0, session_key = NULL, "
                "session_ref = NULL, user_id = NULL, keys = NULL, since = NULL "
                "RETURNING generation",
                [ref, int(bump), now],
            )
            (generation,) = cursor.fetchone()
        yield generation


def current_generation(ref: str) -> int:
    found = PatientSessionState.objects.filter(ref=ref).values_list("generation", flat=True)
    return found.first() or 0


async def acurrent_generation(ref: str) -> int:
    found = PatientSessionState.objects.filter(ref=ref).values_list("generation", flat=True)
    return await found.afirst() or 0


def strip_stale(data: dict[str, Any], generation: int) -> int:
    """Drop patient keys from ``data`` whose generation is older than ``generation``."""
    info = session_meta.read(data)
    if info.get("gen", 0) == generation:
        return 0
    stale = get_registry().patient_keys(list(data))
    for key in stale:
        del data[key]
    data[META_KEY] = session_meta.after_cleanup(info, generation)
    if stale:
        logger.info(
            "Dropped %d patient data items a concurrent request tried to write back "
            "after a cleanup.",
            len(stale),
        )
    return len(stale)


def guarded_save(
    data: dict[str, Any],
    save: Callable[[], Any],
    session_key: str | None = None,
    *,
    client_side: bool = False,
) -> Any:
    """Run ``save`` for a session whose in-memory blob is ``data``, guarded if it needs it
    (and kept in the index of sessions holding patient data, see ``indexing``)."""
    ref = session_meta.read(data).get("ref")
    if ref is None or not get_registry().patient_keys(list(data)):
        return save()
    with locked_state(ref) as state:
        strip_stale(data, state.generation)
        if changed := indexing.update(state, data, session_key, client_side=client_side):
            state.save(update_fields=changed)
        return save()


def merged(
    mine: dict[str, Any], loaded: dict[str, Any] | None, stored: dict[str, Any]
) -> dict[str, Any]:
    """The session to write for a cleanup: the stored one (a concurrent request's changes
    kept) with this request's own changes over it, and no patient data.

    ``loaded`` is what this request loaded; a key it changed, added or removed since is
    this request's change. Without it (never loaded) this request's blob is taken as it is.
    """
    if loaded is None:
        result = dict(mine)
    else:
        result = dict(stored)
        for key in mine.keys() | loaded.keys():
            if key not in mine:
                result.pop(key, None)
            elif key not in loaded or mine[key] != loaded[key]:
                result[key] = mine[key]
    for key in get_registry().patient_keys(list(result)):
        del result[key]
    return result


def bump(ref: str) -> int:
    """Start a new generation for a session that cannot be loaded here (a client-side one):
    its patient data is void wherever a copy turns up; the session leaves the index."""
    with cleaning(ref) as generation:
        return generation


def bump_many(refs: Iterable[str], chunk: int = 500) -> dict[str, int]:
    """Start a new generation for many sessions at once (bulk cleanup); returns ref -> generation.

    The rows are created when missing and stay locked until the caller's transaction ends;
    they are taken in ``ref`` order so two bulk runs cannot deadlock each other. One
    ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING`` per chunk (PostgreSQL, SQLite >= 3.35).
    """
    ordered = sorted(set(refs))
    using = router.db_for_write(PatientSessionState)
    connection = connections[using]
    table = connection.ops.quote_name(PatientSessionState._meta.db_table)
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    generations: dict[str, int] = {}
    upsert = (
        f"ON CONFLICT (ref) DO UPDATE SET generation = {table}.generation + 1, "
        "updated_at = excluded.updated_at, items = 0, session_key = NULL, session_ref = NULL, "
        "user_id = NULL, keys = NULL, since = NULL RETURNING ref, generation"
    )
    # No savepoint (a round trip per call) when called inside a transaction: an error ends
    # the caller's transaction anyway (the bulk sweep retries its page session by session).
    with transaction.atomic(using=using, savepoint=False), array_cursor(connection) as bound:
        cursor, array = bound
        for start in range(0, len(ordered), chunk):
            part = ordered[start : start + chunk]
            if connection.vendor == "postgresql":
                # One array parameter bound by the server in binary
                # (``patient_data.server_binding``): a short, constant statement text to
                # parse and plan, nothing quoted into it on the client.
                cursor.execute(
                    f"INSERT INTO {table} (ref, generation, updated_at) "  # noqa: S608 - table name from the model, values bound
                    f"SELECT r, 1, %s FROM unnest({array}::text[]) AS r ORDER BY r {upsert}",
                    [now, part],
                )
            else:
                rows = ", ".join(["(%s, 1, %s)"] * len(part))
                cursor.execute(
                    f"INSERT INTO {table} (ref, generation, updated_at) VALUES {rows} {upsert}",  # noqa: S608 - table name from the model, values bound
                    [value for ref in part for value in (ref, now)],
                )
            generations.update(cursor.fetchall())
    return generations
