"""One way to build a redis-py asyncio client from ``adapter.redis_url``.

Direct URLs go to ``Redis.from_url``; ``redis+sentinel://`` URLs ask the
sentinels for the master.  Short timeouts and no retries: the callers (lease
backends, the host registry) have their own schedules and must see a failure
at once instead of blocking their loop on redis-py's retries.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from .adapter.redis_url import DirectSpec, parse_redis_url

__all__ = ["redis_client"]


def redis_client(url: str, timeout_s: float) -> aioredis.Redis:
    common: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "socket_keepalive": True,
        "retry": Retry(NoBackoff(), 0),
    }
    spec = parse_redis_url(url)
    if isinstance(spec, DirectSpec):
        return aioredis.Redis.from_url(spec.url, **common)
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(spec.sentinels),
        sentinel_kwargs={"password": spec.sentinel_password,
                         "socket_connect_timeout": timeout_s},
    )
    client: aioredis.Redis = sentinel.master_for(
        spec.service_name, db=spec.db, username=spec.username, password=spec.password,
        ssl=spec.ssl, **common,
    )
    return client
