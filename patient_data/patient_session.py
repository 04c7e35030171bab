"""The one API through which the project puts patient data into a session.

    from patient_data import patient_session
    patient_session.store(request, "patient_summary", summary)
    await patient_session.astore(request, "patient_summary", summary)

Only registered keys are accepted (``UnregisteredPatientKey`` otherwise), and the session's
bookkeeping records when it first got patient data, under which epoch and generation.
"""

from __future__ import annotations

import time
from typing import Any

from django.contrib.sessions.backends.base import SessionBase

from patient_data import epoch
from patient_data import meta as session_meta
from patient_data.registry import META_KEY, UnregisteredPatientKey, get_registry

_MISSING = object()
#: Set on a session object once a patient value was written into it: the middleware then
#: tells the live monitor, once per request (``events.apublish_stored``).
STORED_FLAG = "_patient_data_stored"


def _session_of(target: Any) -> SessionBase:
    return target if isinstance(target, SessionBase) else target.session


def _check(key: str) -> None:
    if not get_registry().is_patient_key(key):
        raise UnregisteredPatientKey(
            f"{key!r} is not a registered patient-data key: add it to PATIENT_SESSION_KEYS "
            "or PATIENT_SESSION_KEY_PREFIXES."
        )


def store(target: Any, key: str, value: Any) -> None:
    """Put a patient value into the session under a registered key.

    Storing the value the session already holds writes nothing, so re-opening the same
    patient does not rewrite the session.
    """
    _check(key)
    session = _session_of(target)
    info = session_meta.read({META_KEY: session.get(META_KEY)})
    if info.get("since") is not None and session.get(key, _MISSING) == value:
        return
    session[key] = value
    session[META_KEY] = session_meta.stamped_for_store(info, time.time(), epoch.current())
    setattr(session, STORED_FLAG, True)


async def astore(target: Any, key: str, value: Any) -> None:
    """Async twin of :func:`store`."""
    _check(key)
    session = _session_of(target)
    info = session_meta.read({META_KEY: await session.aget(META_KEY)})
    if info.get("since") is not None and await session.aget(key, _MISSING) == value:
        return
    await session.aset(key, value)
    await session.aset(
        META_KEY, session_meta.stamped_for_store(info, time.time(), await epoch.acurrent())
    )
    setattr(session, STORED_FLAG, True)


def patient_data_since(target: Any) -> float | None:
    """When the session first got patient data (epoch seconds), or None."""
    return session_meta.read({META_KEY: _session_of(target).get(META_KEY)}).get("since")
