"""Cleanup events for the live monitor, published on the channel layer.

Publishing is best effort with a short timeout: when the layer (Redis) is down the live view
misses the event, the cleanup itself has already happened and is audited.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from patient_data.conf import conf

logger = logging.getLogger("patient_data.events")

EVENT_TYPE = "patient_session.event"


async def apublish(event: dict[str, Any]) -> bool:
    """Send ``event`` to the monitor group; False when the live side is unavailable."""
    layer = get_channel_layer()
    if layer is None:
        return False
    message = {"type": EVENT_TYPE, "event": event}
    try:
        await asyncio.wait_for(
            layer.group_send(conf.PATIENT_EVENT_GROUP, message),
            timeout=conf.PATIENT_EVENT_PUBLISH_TIMEOUT,
        )
    except Exception as exc:  # noqa: BLE001 - any layer failure only degrades the live view
        logger.warning("Live monitor unavailable, event not published (%s).", type(exc).__name__)
        return False
    return True


def publish(event: dict[str, Any]) -> bool:
    """Sync twin of :func:`apublish` (commands, sync middleware, signal receivers)."""
    return async_to_sync(apublish)(event)
