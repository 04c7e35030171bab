"""The one settings object for patient-session protection.

Nothing else in the project reads ``django.conf.settings`` for these options, so tests can
``override_settings`` and every default is visible here.
"""

from __future__ import annotations

from functools import cached_property

from django.conf import settings
from django.core.signals import setting_changed

DEFAULT_PATIENT_SESSION_KEYS: tuple[str, ...] = (
    "current_patient_id",
    "patient_demographics",
    "patient_identifiers",
    "patient_summary",
    "patient_medications",
    "patient_allergies",
    "patient_problems",
    "patient_search_results",
    "prefill_search_form",
    "uploaded_cda_documents",
)
DEFAULT_PATIENT_SESSION_KEY_PREFIXES: tuple[str, ...] = (
    "patient_cda_",
    "patient_document_",
)


class Settings:
    """Each property reads ``settings.NAME`` with the default given here.

    Values are resolved once and kept until a setting changes (``override_settings`` and
    pytest-django's ``settings`` fixture send ``setting_changed``): a missing setting costs
    an ``AttributeError`` inside Django's ``LazySettings``, and the middleware and the bulk
    sweep read these on every request and every session.
    """

    def clear(self) -> None:
        """Forget every resolved value (they are read again at next use)."""
        self.__dict__.clear()

    @cached_property
    def PATIENT_SESSION_TIMEOUT(self) -> float:
        """Minutes of inactivity after which patient data is cleared."""
        return getattr(settings, "PATIENT_SESSION_TIMEOUT", 30)

    @cached_property
    def PATIENT_MAX_INACTIVE_TIME(self) -> float:
        """Minutes of inactivity after which the whole session ends (logout)."""
        return getattr(settings, "PATIENT_MAX_INACTIVE_TIME", 60)

    @cached_property
    def PATIENT_SESSION_MAX_AGE(self) -> float:
        """Absolute lifetime of patient data in minutes, whatever the activity."""
        return getattr(settings, "PATIENT_SESSION_MAX_AGE", 12 * 60)

    @cached_property
    def PATIENT_ACTIVITY_WRITE_INTERVAL(self) -> float:
        """Seconds between two writes of the activity stamp of one session."""
        return getattr(settings, "PATIENT_ACTIVITY_WRITE_INTERVAL", 15)

    @cached_property
    def PATIENT_SESSION_KEYS(self) -> tuple[str, ...]:
        """Exact session keys holding patient data: the defaults plus the setting."""
        extra = tuple(getattr(settings, "PATIENT_SESSION_KEYS", ()))
        return DEFAULT_PATIENT_SESSION_KEYS + extra

    @cached_property
    def PATIENT_SESSION_KEY_PREFIXES(self) -> tuple[str, ...]:
        """Session key prefixes holding patient data: the defaults plus the setting."""
        extra = tuple(getattr(settings, "PATIENT_SESSION_KEY_PREFIXES", ()))
        return DEFAULT_PATIENT_SESSION_KEY_PREFIXES + extra

    @cached_property
    def PATIENT_SESSION_HASH_KEY(self) -> str:
        """Secret for the keyed hash of session keys in logs, audit rows and events."""
        return getattr(settings, "PATIENT_SESSION_HASH_KEY", None) or settings.SECRET_KEY

    @cached_property
    def PATIENT_PASSIVE_PATH_PREFIXES(self) -> tuple[str, ...]:
        """Path prefixes whose requests never count as user activity (static files...)."""
        default = (settings.STATIC_URL,) if getattr(settings, "STATIC_URL", None) else ()
        return tuple(getattr(settings, "PATIENT_PASSIVE_PATH_PREFIXES", default))

    @cached_property
    def PATIENT_CLEAR_SITE_DATA(self) -> bool:
        """Send Clear-Site-Data on cleanup responses (defence in depth, HTTPS only)."""
        return getattr(settings, "PATIENT_CLEAR_SITE_DATA", True)

    @cached_property
    def PATIENT_EVENT_GROUP(self) -> str:
        """Channel-layer group the cleanup service publishes its events to."""
        return getattr(settings, "PATIENT_EVENT_GROUP", "patient-session-events")

    @cached_property
    def PATIENT_EVENT_PUBLISH_TIMEOUT(self) -> float:
        """Seconds a publish may take before the live view is given up for that event."""
        return getattr(settings, "PATIENT_EVENT_PUBLISH_TIMEOUT", 0.5)

    @cached_property
    def PATIENT_EPOCH_CACHE_SECONDS(self) -> float:
        """How long a process trusts its copy of the patient-data epoch."""
        return getattr(settings, "PATIENT_EPOCH_CACHE_SECONDS", 2)

    @cached_property
    def PATIENT_TIMEOUT_WARNING(self) -> float:
        """Seconds before a timeout at which an open page is warned over its socket."""
        return getattr(settings, "PATIENT_TIMEOUT_WARNING", 60)

    @cached_property
    def PATIENT_DISCONNECT_GRACE(self) -> float:
        """Seconds a session's last socket may stay closed before its patient data is cleared
        as ``browser_closed`` (a navigation or reload reconnects well within it)."""
        return getattr(settings, "PATIENT_DISCONNECT_GRACE", 10)

    @cached_property
    def PATIENT_PRESENCE_HEARTBEAT(self) -> float:
        """Seconds between two presence heartbeats of a process's open sockets."""
        return getattr(settings, "PATIENT_PRESENCE_HEARTBEAT", 5)

    @cached_property
    def PATIENT_SOCKET_RATE_LIMIT(self) -> tuple[int, float]:
        """``(frames, seconds)``: frames one socket may send per window; more get a
        ``rate_limited`` error, twice as many close the socket (4008)."""
        return getattr(settings, "PATIENT_SOCKET_RATE_LIMIT", (20, 10))

    @cached_property
    def NCP_WORKERS(self) -> int:
        """How many server processes share the channel layer (set by startup_with_cleanup)."""
        return getattr(settings, "NCP_WORKERS", 1)

    @cached_property
    def PATIENT_HIDDEN_TIMEOUT(self) -> float:
        """Seconds a hidden tab may stay hidden before the page clears the patient data
        (reason ``tab_hidden``); 0 turns it off."""
        return getattr(settings, "PATIENT_HIDDEN_TIMEOUT", 0)


conf = Settings()


def _forget(**kwargs) -> None:
    # Any setting: some values derive from others (SECRET_KEY, STATIC_URL).
    conf.clear()


setting_changed.connect(_forget, dispatch_uid="patient_data.conf")
