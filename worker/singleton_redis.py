"""The Redis lease backend for ``@singleton``: one holder across every host.

One key per singleton, ``<channel>:singleton:{<name>}``, holds the tenure as
JSON (holder id, host, slot, pid, token, since) with a ``PX`` expiry of the
lease; ``<channel>:singleton:{<name>}:token`` counts tenures (the fencing
token).  The braces keep both keys in one Redis Cluster slot.

Each request is one Lua script, so it is atomic: the holder renews (PEXPIRE)
only while the key names it; anyone acquires only when the key is gone (it
expired or was released), drawing the next token.  Release deletes the key
only if it still names this holder and token.  These are the rules of
:class:`worker.lease.LeaseTable`, with Redis's clock as the granting side's:
the holder's own validity counts from when it sent the request
(:class:`worker.lease.HolderLease`), so it lapses before the key does.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from redis.exceptions import RedisError

from .lease import Grant
from .redis_client import redis_client
from .singleton_runner import (
    LeaseBackendError,
    broker_holder,
    grant_from_record,
    tenure_record,
)

__all__ = ["RedisLeases"]

_ACQUIRE_OR_RENEW = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local v = cjson.decode(cur)
  if v['id'] == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {1, cur}
  end
  return {0, cur}
end
if ARGV[4] ~= '1' then
  return {0, ''}
end
local v = cjson.decode(ARGV[3])
v['token'] = redis.call('INCR', KEYS[2])
local s = cjson.encode(v)
redis.call('SET', KEYS[1], s, 'PX', ARGV[2])
return {1, s}
"""

_RELEASE = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local v = cjson.decode(cur)
  if v['id'] == ARGV[1] and tonumber(v['token']) == tonumber(ARGV[2]) then
    redis.call('DEL', KEYS[1])
    return 1
  end
end
return 0
"""


class RedisLeases:
    def __init__(
        self, url: str, channel: str, *, slot: int, generation: int, lease_s: float
    ) -> None:
        self.me = broker_holder(slot, generation)
        self.channel = channel
        self.lease_ms = max(1, int(lease_s * 1000))
        self._redis = redis_client(url, max(0.1, lease_s / 3))
        self._acquire = self._redis.register_script(_ACQUIRE_OR_RENEW)
        self._release = self._redis.register_script(_RELEASE)

    def _keys(self, name: str) -> list[str]:
        key = f"{self.channel}:singleton:{{{name}}}"
        return [key, f"{key}:token"]

    async def request(self, name: str, seq: int, eligible: bool) -> tuple[bool, Grant | None]:
        me = tenure_record(self.me, since=time.time())
        try:
            granted, raw = await self._acquire(
                keys=self._keys(name),
                args=[self.me.key, self.lease_ms, me, "1" if eligible else "0"],
            )
        except RedisError as exc:
            raise LeaseBackendError(f"redis: {exc}") from exc
        return bool(granted), grant_from_record(raw) if raw else None

    async def release(self, name: str, token: int) -> None:
        try:
            await self._release(keys=self._keys(name), args=[self.me.key, token])
        except RedisError as exc:
            raise LeaseBackendError(f"redis: {exc}") from exc

    def set_lost_hook(self, lost: Callable[[str], None]) -> None:
        pass  # a key expires on Redis's clock: the polls see it

    async def close(self) -> None:
        await self._redis.aclose()
