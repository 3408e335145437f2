"""A redis-py asyncio client for a parsed ``redis_url``: direct, or through Sentinel.

Direct URLs go to ``Redis.from_url``; ``redis+sentinel://`` URLs ask the
sentinels for the master.  No retries inside redis-py: every caller (the
adapter's loops, the lease backends, the host registry) has its own schedule
and must see a failure at once.

Pub/sub is *sharded* (SSUBSCRIBE / SPUBLISH) on Redis >= 7
(:func:`use_sharded`); :func:`publish` and :func:`subscribers` pick the
matching command.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from .redis_url import DirectSpec, SentinelSpec

__all__ = ["connect", "publish", "subscribers", "use_sharded"]


def connect(
    spec: DirectSpec | SentinelSpec, *, socket_timeout_s: float | None, connect_timeout_s: float
) -> aioredis.Redis:
    """A client (connecting lazily); ``socket_timeout_s`` None waits for replies forever."""
    common: dict[str, Any] = {
        "socket_timeout": socket_timeout_s,
        "socket_connect_timeout": connect_timeout_s,
        "socket_keepalive": True,
        "retry": Retry(NoBackoff(), 0),
    }
    if isinstance(spec, DirectSpec):
        return aioredis.Redis.from_url(spec.url, **common)
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(spec.sentinels),
        sentinel_kwargs={
            "password": spec.sentinel_password,
            "socket_connect_timeout": connect_timeout_s,
        },
    )
    client: aioredis.Redis = sentinel.master_for(
        spec.service_name, db=spec.db, username=spec.username,
        password=spec.password, ssl=spec.ssl, **common,
    )
    return client


async def use_sharded(client: aioredis.Redis, option: bool | None) -> bool:
    """``option``, or (None) whether the server is Redis >= 7."""
    if option is not None:
        return option
    info = await client.info("server")
    version = str(info.get("redis_version", "0"))
    try:
        return int(version.split(".", 1)[0]) >= 7
    except ValueError:
        return False


def publish(client: Any, sharded: bool | None, channel: str, frame: bytes) -> Any:
    """PUBLISH or SPUBLISH on a client or a pipeline; await it on a client."""
    if sharded:
        return client.spublish(channel, frame)
    return client.publish(channel, frame)


async def subscribers(client: aioredis.Redis, sharded: bool | None, channel: str) -> int:
    """How many are subscribed to ``channel`` (0 when the server does not say)."""
    if sharded:
        counts = await client.pubsub_shardnumsub(channel)
    else:
        counts = await client.pubsub_numsub(channel)
    return int(counts[0][1]) if counts else 0
