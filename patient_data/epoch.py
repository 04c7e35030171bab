"""The server-wide patient-data epoch: advancing it voids every older patient stamp at once."""

from __future__ import annotations

import time

from django.db import transaction
from django.db.models import F

from patient_data.conf import conf
from patient_data.models import PatientDataEpoch

_cached: tuple[float, int] | None = None


def _fresh(now: float) -> int | None:
    if _cached is not None and now - _cached[0] < conf.PATIENT_EPOCH_CACHE_SECONDS:
        return _cached[1]
    return None


def _remember(now: float, value: int | None) -> int:
    global _cached
    _cached = (now, value or 0)
    return _cached[1]


def current() -> int:
    """The current epoch (cached in-process for PATIENT_EPOCH_CACHE_SECONDS)."""
    now = time.monotonic()
    value = _fresh(now)
    if value is None:
        found = PatientDataEpoch.objects.filter(pk=1).values_list("value", flat=True).first()
        value = _remember(now, found)
    return value


async def acurrent() -> int:
    now = time.monotonic()
    value = _fresh(now)
    if value is None:
        query = PatientDataEpoch.objects.filter(pk=1).values_list("value", flat=True)
        value = _remember(now, await query.afirst())
    return value


def advance() -> int:
    """Advance the epoch by one and return the new value (effective for this process at once)."""
    with transaction.atomic():
        PatientDataEpoch.objects.get_or_create(pk=1)
        PatientDataEpoch.objects.filter(pk=1).update(value=F("value") + 1)
        value = PatientDataEpoch.objects.get(pk=1).value
    return _remember(time.monotonic(), value)


def wait_until_in_force(advanced_at: float) -> None:
    """Return once no process can still trust a copy read before the advance at
    ``advanced_at`` (``time.monotonic()``): each trusts one for PATIENT_EPOCH_CACHE_SECONDS
    at most. Requests already judged before the advance may still finish."""
    remaining = conf.PATIENT_EPOCH_CACHE_SECONDS - (time.monotonic() - advanced_at)
    if remaining > 0:
        time.sleep(remaining)


def forget() -> None:
    """Drop the in-process copy (tests, and processes that must see an advance at once)."""
    global _cached
    _cached = None
