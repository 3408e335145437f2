"""One way to build a redis-py asyncio client from ``adapter.redis_url``.

Direct URLs go to ``Redis.from_url``; ``redis+sentinel://`` URLs ask the
sentinels for the master.  Short timeouts and no retries: the callers (lease
backends, the host registry) have their own schedules and must see a failure
at once instead of blocking their loop on redis-py's retries.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from .adapter.redis_connect import connect
from .adapter.redis_url import parse_redis_url

__all__ = ["redis_client"]


def redis_client(url: str, timeout_s: float) -> aioredis.Redis:
    return connect(parse_redis_url(url), socket_timeout_s=timeout_s, connect_timeout_s=timeout_s)
