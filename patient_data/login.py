"""What a login writes into the session: a ref and the time of the login.

The ref lets an ended session be revoked (patient_data.revocation) even when it never held
patient data; the login time starts the session's absolute lifetime
(``PATIENT_SESSION_ABSOLUTE_MAX_AGE``, judged by patient_data.policy).
"""

from __future__ import annotations

import time
from typing import Any

from patient_data import meta as session_meta
from patient_data.registry import META_KEY


def on_user_logged_in(sender: Any, request: Any = None, user: Any = None, **kwargs: Any) -> None:
    """``user_logged_in`` receiver (``login`` and ``alogin``; the latter runs it in a thread)."""
    session = getattr(request, "session", None)
    if session is None:
        return
    info = session_meta.read({META_KEY: session.get(META_KEY)})
    session[META_KEY] = session_meta.at_login(info, time.time())
