"""Options for redis-py pools whose connections survive a Redis restart.

redis-py checks an idle connection as it leaves the pool (reconnecting one the server
closed), but 8.1 skips that check whenever maintenance notifications are on, and with RESP3
(its default) they are on ("auto") for every pool (redis/redis-py#4252). After a Redis restart
each connection that sat idle through it then fails its next command with "Connection closed
by server". Turning the notifications (a Redis Enterprise/Cloud feature, which also costs a
round trip per new connection) off makes the check run again. Used by every asyncio pool of
the project: the channel layer's, the presence store's and the rate limit's.
"""

from __future__ import annotations

import inspect
from typing import Any

from redis.asyncio import ConnectionPool


def checked(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` for ``redis.asyncio`` ``ConnectionPool`` / ``Redis.from_url``, with the
    maintenance notifications off where this redis-py has them."""
    if "maint_notifications_config" not in inspect.signature(ConnectionPool.__init__).parameters:
        return dict(options)
    from redis.maint_notifications import MaintNotificationsConfig

    return {"maint_notifications_config": MaintNotificationsConfig(enabled=False), **options}
