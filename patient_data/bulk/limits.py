"""Bounds of the bulk commands' options, checked before anything is read or changed.

No Django import here: ``startup_with_cleanup.py`` checks its options before Django starts.
"""

from __future__ import annotations

import math

#: Sessions per page and transaction: beyond this a page no longer fits a transaction's memory.
MAX_BATCH_SIZE = 100_000
#: A century: anything longer is a typo, and would overflow date arithmetic.
MAX_OLDER_THAN_HOURS = 100 * 366 * 24
#: Worker processes of a sweep: each holds a database connection (PostgreSQL's default
#: max_connections is 100, shared with the servers).
MAX_WORKERS = 32


def batch_size_refusal(size: int) -> str | None:
    if 1 <= size <= MAX_BATCH_SIZE:
        return None
    return f"--batch-size must be between 1 and {MAX_BATCH_SIZE}."


def workers_refusal(workers: int | None) -> str | None:
    if workers is None or 1 <= workers <= MAX_WORKERS:
        return None
    return f"--workers must be between 1 and {MAX_WORKERS}."


def older_than_hours_refusal(hours: float | None) -> str | None:
    if hours is None or (math.isfinite(hours) and 0 < hours <= MAX_OLDER_THAN_HOURS):
        return None
    return f"--older-than-hours must be a positive number of hours up to {MAX_OLDER_THAN_HOURS}."
