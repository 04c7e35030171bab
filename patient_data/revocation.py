"""Ended sessions stay ended: a bounded, expiring server-side revocation list.

A signed-cookie session lives in the browser, and a ``cached_db`` session can live on in
another process's local cache: deleting "the" session does not reach those copies. So when
a session that carries a ref (every session signed in or holding patient data) is flushed
(logout, emergency cleanup, login as someone else, max-inactive), its ref is recorded here
and its cleanup generation advanced; stores whose copies can come back
(``verify_generation_on_load``) look the ref up on every request and log such a copy out.

A row is kept only as long as a copy can still be presented: ``SESSION_COOKIE_AGE``, the
``max_age`` Django's signed-cookie engine enforces on load (and the cache lifetime of a
``cached_db`` copy). Every revocation first purges the rows past that, so the table holds at
most the sessions ended within one cookie lifetime.
"""

from __future__ import annotations

import datetime

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import router, transaction
from django.db.models import F
from django.utils import timezone

from patient_data.models import EndedSession, PatientSessionState


def revoke(ref: str) -> None:
    """Record the session ``ref`` as ended and void its patient data (new generation).

    Only a session that held patient data has a generation row to advance (the UPDATE waits
    for a guarded save holding it); one that never did gets no row for it.
    """
    now = timezone.now()
    using = router.db_for_write(EndedSession)
    with transaction.atomic(using=using):
        PatientSessionState.objects.using(using).filter(ref=ref).update(
            generation=F("generation") + 1, updated_at=now
        )
        ended = EndedSession.objects.using(using)
        ended.filter(expires_at__lte=now).delete()
        ended.update_or_create(
            ref=ref,
            defaults={"expires_at": now + datetime.timedelta(seconds=settings.SESSION_COOKIE_AGE)},
        )


async def arevoke(ref: str) -> None:
    """Async twin of :func:`revoke` (one transaction: it runs in the sync world)."""
    await sync_to_async(revoke)(ref)


def is_ended(ref: str) -> bool:
    return EndedSession.objects.filter(ref=ref, expires_at__gt=timezone.now()).exists()


async def ais_ended(ref: str) -> bool:
    return await EndedSession.objects.filter(ref=ref, expires_at__gt=timezone.now()).aexists()
