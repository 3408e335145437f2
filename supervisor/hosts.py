"""Several hosts, one cluster: who is in it, registered in Redis with a lease.

Each host's master registers ``<channel>:host:<id>`` with a ``PX`` expiry of
``[cluster] host_lease_s`` and renews it every third of that; the value says
where the host's balancer is reached (``advertise``), a nonce of this run, and
its worker and connection counts for /status.  ``<channel>:hosts`` is a sorted
set indexing the ids, so a host lists its peers with one ZRANGE and one MGET;
an id whose key has expired is not live, whatever the index says, and is
dropped from it.

A host that dies drops out when its key expires; one that stops cleanly
deletes it at once.  A host id is unique: registration is refused while a live
key with that id names another address (a clear error at start).  The same
address with another nonce is this host's previous run, killed before it could
deregister; the new run takes the id over.

:class:`HostBook` is the pure part (what is live, what /status and /health
say); :class:`RedisHostRegistry` is the thin Redis side.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from worker.redis_client import redis_client

from .config import Config
from .exceptions import ConfigError

__all__ = ["HostBook", "HostInfo", "HostRegistryError", "HostsService", "RedisHostRegistry",
           "hosts_service"]

log = logging.getLogger("siocluster.hosts")

# KEYS: host key, index.  ARGV: value, advertise, lease ms, id, nonce.
_REGISTER = """
if redis.replicate_commands then redis.replicate_commands() end
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, v = pcall(cjson.decode, cur)
  if ok and type(v) == 'table' and v['advertise'] ~= ARGV[2] then
    return {0, cur}
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
local t = redis.call('TIME')
redis.call('ZADD', KEYS[2], t[1] * 1000 + math.floor(t[2] / 1000) + tonumber(ARGV[3]), ARGV[4])
if cur then
  local ok, v = pcall(cjson.decode, cur)
  if ok and type(v) == 'table' and v['nonce'] ~= ARGV[5] then
    return {2, cur}
  end
end
return {1, ''}
"""

# KEYS: host key, index.  ARGV: nonce, id.
_DEREGISTER = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, v = pcall(cjson.decode, cur)
  if ok and type(v) == 'table' and v['nonce'] ~= ARGV[1] then
    return 0
  end
  redis.call('DEL', KEYS[1])
end
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
"""


class HostRegistryError(ConfigError):
    """This host cannot join: its id is taken by a live host elsewhere."""


@dataclass(frozen=True, slots=True)
class HostInfo:
    id: str
    advertise: str
    workers: int = 0
    connections: int = 0
    started: float = 0.0  # wall clock


@dataclass
class HostBook:
    """The hosts this host knows of, and how reaching them went (pure)."""

    me: str
    live: dict[str, HostInfo] = field(default_factory=dict)
    seen_mono: dict[str, float] = field(default_factory=dict)
    # Forwarding failures since the last success, by peer (the balancer reports).
    unreachable: dict[str, str] = field(default_factory=dict)
    registry_error: str | None = None

    def update(self, hosts: list[HostInfo], now: float) -> tuple[list[str], list[str]]:
        """Take a fresh listing; return the ids that (joined, left)."""
        fresh = {h.id: h for h in hosts}
        joined = sorted(set(fresh) - set(self.live) - {self.me})
        left = sorted(set(self.live) - set(fresh))
        self.live = fresh
        for host_id in fresh:
            self.seen_mono[host_id] = now
        for host_id in left:
            self.seen_mono.pop(host_id, None)
            self.unreachable.pop(host_id, None)
        return joined, left

    def note_forward(self, host_id: str, error: str | None) -> None:
        if error is None:
            self.unreachable.pop(host_id, None)
        elif host_id in self.live:
            self.unreachable[host_id] = error

    def address(self, host_id: str) -> str | None:
        info = self.live.get(host_id)
        return info.advertise if info is not None and host_id != self.me else None

    def live_ids(self) -> frozenset[str]:
        return frozenset(self.live)

    def reasons(self) -> list[str]:
        """What /health says about the other hosts."""
        out = [f"peer host {h} unreachable while its lease is live: {why}"
               for h, why in sorted(self.unreachable.items()) if h in self.live]
        if self.registry_error:
            out.append(f"host registry: {self.registry_error}")
        return out

    def status(self, now: float) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for host_id in sorted(self.live):
            info = self.live[host_id]
            seen = self.seen_mono.get(host_id)
            rows.append({
                "id": host_id, "address": info.advertise, "self": host_id == self.me,
                "workers": info.workers, "connections": info.connections,
                "last_seen_s": None if seen is None else round(now - seen, 1),
                "reachable": host_id not in self.unreachable,
            })
        return rows


def _info(raw: Any) -> HostInfo | None:
    if not raw:
        return None
    try:
        v = json.loads(raw)
        return HostInfo(str(v["id"]), str(v["advertise"]), int(v.get("workers", 0)),
                        int(v.get("connections", 0)), float(v.get("started", 0.0)))
    except (ValueError, KeyError, TypeError):
        return None


class RedisHostRegistry:
    """Register this host, renew it, list the others; one Redis round trip each."""

    def __init__(self, url: str, channel: str, host_id: str, advertise: str,
                 lease_s: float) -> None:
        self.host_id = host_id
        self.advertise = advertise
        self.lease_ms = max(1, int(lease_s * 1000))
        self.nonce = secrets.token_hex(8)
        self.started = time.time()
        self._key = f"{channel}:host:{host_id}"
        self._index = f"{channel}:hosts"
        self._prefix = f"{channel}:host:"
        self._redis = redis_client(url, max(0.2, lease_s / 4))
        self._register = self._redis.register_script(_REGISTER)
        self._deregister = self._redis.register_script(_DEREGISTER)

    def _value(self, workers: int, connections: int) -> str:
        return json.dumps({"id": self.host_id, "advertise": self.advertise, "nonce": self.nonce,
                           "workers": workers, "connections": connections,
                           "started": self.started})

    async def register(self, workers: int = 0, connections: int = 0, *,
                       first: bool = False) -> None:
        """Register or renew; raise :class:`HostRegistryError` on an id clash."""
        result = await self._register(
            keys=[self._key, self._index],
            args=[self._value(workers, connections), self.advertise, self.lease_ms,
                  self.host_id, self.nonce],
        )
        code, current = int(result[0]), result[1]
        if code == 0:
            other = _info(current)
            where = other.advertise if other is not None else "another host"
            raise HostRegistryError(
                f"cluster.host_id {self.host_id!r} is already registered by the live host at "
                f"{where}; give each host its own cluster.host_id (or its own "
                "cluster.advertise, from which the id is derived)"
            )
        if code == 2:
            verb = "took over" if first else "lost and retook"
            log.warning("host id %r %s from a previous run at %s (it did not deregister)",
                        self.host_id, verb, self.advertise)

    async def hosts(self) -> list[HostInfo]:
        ids = [i.decode() if isinstance(i, bytes) else str(i)
               for i in await self._redis.zrange(self._index, 0, -1)]
        if not ids:
            return []
        values = await self._redis.mget([self._prefix + i for i in ids])
        out: list[HostInfo] = []
        gone: list[str] = []
        for host_id, raw in zip(ids, values, strict=True):
            info = _info(raw)
            if info is None:
                gone.append(host_id)
            else:
                out.append(info)
        if gone:
            await self._redis.zrem(self._index, *gone)
        return out

    async def deregister(self) -> None:
        try:
            await self._deregister(keys=[self._key, self._index], args=[self.nonce, self.host_id])
        except (RedisError, OSError) as exc:
            log.warning("could not deregister host %r: %s", self.host_id, exc)

    async def close(self) -> None:
        await self._redis.aclose()


class HostsService:
    """The master's side of multi-host mode: join at start, renew and list, leave at stop.

    ``counts`` gives this host's (workers, connections) for its registration.
    Redis trouble after start never stops the master: the last listing stays in
    force (hosts already known keep being forwarded to) and /health says why.
    """

    def __init__(self, url: str, channel: str, host_id: str, advertise: str, lease_s: float,
                 counts: Callable[[], tuple[int, int]]) -> None:
        self.host_id = host_id
        self.book = HostBook(me=host_id)
        self.registry = RedisHostRegistry(url, channel, host_id, advertise, lease_s)
        self.renew_every_s = lease_s / 3
        self.list_every_s = min(1.0, self.renew_every_s)
        self._counts = counts
        self._task: asyncio.Task[None] | None = None

    async def start(self, bound_port: int) -> None:
        """Join; an advertised port 0 becomes ``bound_port``, the balancer's own."""
        host, _sep, port = self.registry.advertise.rpartition(":")
        if port == "0":
            self.registry.advertise = f"{host}:{bound_port}"
        try:
            await self.registry.register(*self._counts(), first=True)
            self.book.update(await self.registry.hosts(), time.monotonic())
        except (RedisError, OSError) as exc:
            await self.registry.close()
            raise HostRegistryError(
                f"cluster.advertise: cannot register this host in Redis "
                f"(adapter.redis_url): {type(exc).__name__}: {exc}"
            ) from None
        except HostRegistryError:
            await self.registry.close()
            raise
        log.info("host %s joined the cluster at %s; hosts: %s", self.host_id,
                 self.registry.advertise, ", ".join(sorted(self.book.live)))
        self._task = asyncio.create_task(self._run(), name="hosts")

    async def _run(self) -> None:
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(self.list_every_s)
            now = time.monotonic()
            try:
                if now - renewed >= self.renew_every_s:
                    await self.registry.register(*self._counts())
                    renewed = now
                joined, left = self.book.update(await self.registry.hosts(), now)
            except HostRegistryError as exc:
                self.book.registry_error = str(exc)
                log.error("%s", exc)
                continue
            except (RedisError, OSError) as exc:
                if self.book.registry_error is None:
                    log.warning("host registry: Redis did not answer: %s", exc)
                self.book.registry_error = f"Redis did not answer: {type(exc).__name__}"
                continue
            if self.book.registry_error is not None:
                log.info("host registry: Redis answers again")
                self.book.registry_error = None
            for host_id in joined:
                log.info("host %s joined at %s", host_id, self.book.live[host_id].advertise)
            for host_id in left:
                log.warning("host %s left the cluster", host_id)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.registry.deregister()
        await self.registry.close()


def hosts_service(config: Config, counts: Callable[[], tuple[int, int]]) -> HostsService | None:
    """The service for multi-host mode, or None when this host is the whole cluster."""
    host_id = config.host_id()
    if not host_id:
        return None
    c = config.cluster
    return HostsService(config.adapter.redis_url, config.adapter.channel, host_id, c.advertise,
                        c.host_lease_s, counts)
