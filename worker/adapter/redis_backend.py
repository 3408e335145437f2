"""The ``redis`` backend: pub/sub through Redis, for workers on many hosts.

Theory of operation
-------------------

Channels: ``<channel>`` carries broadcasts and requests to every worker;
``<channel>#<node>`` carries what is meant for one worker (replies, client
acks).  On Redis >= 7 both are *sharded* channels (SSUBSCRIBE / SPUBLISH), so
on a Redis Cluster each channel lives on one shard instead of being fanned out
to every node; older servers get plain SUBSCRIBE / PUBLISH.  The node id is
``<slot>.<generation>.<random>``: slots repeat across hosts, so a sid does not
name its owner here and emits to a remote sid are broadcast with the sid as
the target room (receivers drop them after decoding only the header).

Two connections: a subscriber (the listen loop) and a publisher (the send
loop).  Every outgoing frame goes through one :class:`~.buffer.OutageBuffer`
and leaves in order, in pipelined batches.  The state is CONNECTED only while
both connections work; otherwise DEGRADED, and each loop reconnects on its own
with exponential backoff and jitter.

Outage, step by step:

1. a publish or the listen fails: DEGRADED; the manager freezes peer expiry
   (silence from peers says nothing now);
2. emits keep queueing within the buffer's byte and age bounds; what does not
   fit is counted and logged once per outage;
3. both connections are back and resubscribed: before flushing, wait (at most
   ``flush_grace_s``) until as many subscribers are listening on the broadcast
   channel as the last broadcast reached before the outage, so peers that are
   still resubscribing do not miss the backlog;
4. flush in order.  A batch that failed half-way is re-sent whole: the
   sequence numbers in the envelope header let receivers drop the duplicates.

A directed publish that reached nobody (its node is gone) is counted as
undeliverable.

Several hosts, one cluster (``host`` given): the node id is the sid's own
prefix, ``<host>-<slot>.<generation>``, so an emit to a remote sid goes to its
owner's channel alone; and rooms are dynamic (:mod:`.delivery`): an emit to
one room goes to ``<channel>#r#<nsp>#<room>``, which a worker subscribes to
while it holds that room (:mod:`.redis_rooms`).  A publish to a room channel
that reached nobody is not undeliverable: nobody held the room.

Connections come from :mod:`.redis_connect` (direct or through Sentinel).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from balancer.sid import parse_sid

from ..control import TransportStatus
from .buffer import OutageBuffer
from .outage import Outages
from .redis_connect import connect, publish, subscribers, use_sharded
from .redis_rooms import RoomSubscriptions
from .redis_url import DirectSpec, SentinelSpec, parse_redis_url
from .transport import AdapterState, Owner, TransportEvents

__all__ = ["RedisTransport"]

log = logging.getLogger("siocluster.adapter.redis")

_FAILURES = (RedisError, OSError, asyncio.TimeoutError)
_BATCH = 64


class RedisTransport:
    name = "redis"

    def __init__(
        self,
        url: str,
        channel: str,
        slot: int,
        generation: int,
        *,
        # Limits
        outage_buffer_s: float | None,
        outage_buffer_bytes: int | None,
        # Timeouts
        connect_timeout_s: float = 2.0,
        start_timeout_s: float = 5.0,
        flush_grace_s: float = 3.0,
        backoff_initial_s: float = 0.05,
        backoff_max_s: float = 2.0,
        # None: sharded pub/sub when the server is Redis >= 7.
        sharded: bool | None = None,
        # Several hosts: this host's id (sids name it); turns dynamic rooms on.
        host: str = "",
    ) -> None:
        self.spec: DirectSpec | SentinelSpec = parse_redis_url(url)
        self.host = host
        self.dynamic_rooms = bool(host)
        if host:
            self.node = f"{host}-{slot:x}.{generation:x}"
        else:
            self.node = f"{slot:x}.{generation:x}.{secrets.token_hex(4)}"
        self.channel = channel
        self.direct_channel = self.channel_for(self.node)
        self.rooms = RoomSubscriptions(self.channel_for)
        self.buffer = OutageBuffer(max_age_s=outage_buffer_s, max_bytes=outage_buffer_bytes)
        self.outage = Outages("redis", self.buffer, log)
        self.connect_timeout_s = connect_timeout_s
        self.start_timeout_s = start_timeout_s
        self.flush_grace_s = flush_grace_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.sharded_option = sharded
        self.sharded: bool | None = None
        self._state = AdapterState.CONNECTING
        self._events: TransportEvents | None = None
        self._sub_ok = False
        self._pub_ok = False
        self._sub_ready = asyncio.Event()
        self._healthy = asyncio.Event()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._reach = 0  # subscribers the last broadcast reached while healthy
        self._failed_once = False
        self._needs_gate = False
        self._urgent: tuple[bytes, str | None] | None = None
        # Counters
        self.sent = 0
        self.undeliverable = 0
        self.errors = 0

    def channel_for(self, node: str | None) -> str:
        return self.channel if node is None else f"{self.channel}#{node}"

    @property
    def state(self) -> AdapterState:
        return self._state

    def _update_state(self) -> None:
        """Derive the state from the two connections; log and report transitions."""
        if self._state == AdapterState.CLOSED:
            return
        if self._sub_ok and self._pub_ok:
            new = AdapterState.CONNECTED
        elif self._failed_once:
            new = AdapterState.DEGRADED
        else:
            new = AdapterState.CONNECTING
        if new == self._state:
            return
        log.info("redis adapter %s: %s -> %s", self.node, self._state.name, new.name)
        if new == AdapterState.DEGRADED:
            self._needs_gate = True
            self.outage.began()
        elif new == AdapterState.CONNECTED:
            self.outage.ended()
        self._state = new
        if new == AdapterState.CONNECTED:
            self._healthy.set()
        else:
            self._healthy.clear()
        if self._events is not None:
            self._events.state_changed(new)

    def _failed(self) -> None:
        self._failed_once = True
        self._update_state()

    # Connections

    def subscriber_client(self) -> aioredis.Redis:
        """A new client to the same server, with no read timeout (for SUBSCRIBE)."""
        return self._client()

    def _client(self, *, publisher: bool = False) -> aioredis.Redis:
        # A publish must not hang on a silently dead connection; the
        # subscriber legitimately waits forever for the next message.
        return connect(self.spec, socket_timeout_s=5 * self.connect_timeout_s if publisher
                       else None, connect_timeout_s=self.connect_timeout_s)

    def _backoff(self, current: float) -> float:
        return min(self.backoff_max_s, current * 2) * random.uniform(0.8, 1.2)

    # Lifecycle

    async def start(self, events: TransportEvents) -> None:
        self._events = events
        self._tasks = [
            asyncio.create_task(self._listen_forever()),
            asyncio.create_task(self._send_forever()),
        ]
        if self.dynamic_rooms:
            self._tasks.append(asyncio.create_task(self.rooms.sync_forever()))
        try:
            async with asyncio.timeout(self.start_timeout_s):
                await self._healthy.wait()
        except TimeoutError:
            log.warning("redis not reachable at start; starting degraded")
            self._failed()

    async def close(self) -> None:
        # Give queued frames (a BYE, last emits) a moment to leave.
        if self._state == AdapterState.CONNECTED:
            deadline = time.monotonic() + 1.0
            while len(self.buffer) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        self._state = AdapterState.CLOSED
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # Receiving

    async def _listen_forever(self) -> None:
        delay = self.backoff_initial_s
        while True:
            client = self._client()
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                sharded = await use_sharded(client, self.sharded_option)
                self.sharded = sharded
                rooms = self.rooms.channels_wanted()
                if sharded:
                    await pubsub.ssubscribe(self.channel, self.direct_channel, *rooms)
                else:
                    await pubsub.subscribe(self.channel, self.direct_channel, *rooms)
                self.rooms.attached(pubsub, sharded)
                self._sub_ok = True
                self._sub_ready.set()
                self._wake.set()
                self._update_state()
                delay = self.backoff_initial_s
                async for message in pubsub.listen():
                    if message["type"] in ("message", "smessage"):
                        assert self._events is not None
                        await self._events.frame_received(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Whatever redis-py raises (ConnectionError, EOFError, ...), this
                # loop must survive it: a dead listener would make the worker deaf.
                self.errors += 1
                level = logging.DEBUG if isinstance(exc, _FAILURES) else logging.WARNING
                log.log(level, "redis listen failed: %r", exc)
            finally:
                # The publisher's connection probably died too: make it reconnect.
                self.rooms.detached()
                self._sub_ok = False
                self._pub_ok = False
                self._sub_ready.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                with contextlib.suppress(Exception):
                    await client.aclose()
            if self._state == AdapterState.CLOSED:
                return
            self._failed()
            await asyncio.sleep(delay)
            delay = self._backoff(delay)

    def interest(self, key: str, on: bool) -> None:
        self.rooms.interest(key, on)

    # Sending

    def send_room(self, frame: bytes, key: str) -> None:
        self.outage.buffer_frame(frame, key)
        self._wake.set()

    def send(self, frame: bytes, to: str | None, *, bufferable: bool = True) -> None:
        if not bufferable:
            # Heartbeats: unordered, never buffered (stale after an outage), and
            # not queued behind a backlog, or peers would time each other out.
            if self._state == AdapterState.CONNECTED:
                self._urgent = (frame, to)
                self._wake.set()
            return
        self.outage.buffer_frame(frame, to)
        self._wake.set()

    async def _send_forever(self) -> None:
        delay = self.backoff_initial_s
        client: aioredis.Redis | None = None
        try:
            while True:
                if client is not None and not self._pub_ok:
                    with contextlib.suppress(Exception):
                        await client.aclose()
                    client = None
                if client is not None and self._urgent is not None and self._sub_ok:
                    with contextlib.suppress(Exception):
                        await self._send_urgent(client)
                idle = not len(self.buffer) or not self._sub_ok
                if idle and client is not None:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.5):
                            await self._wake.wait()
                    self.buffer.expire(time.monotonic())
                    continue
                try:
                    if client is None:
                        client = self._client(publisher=True)
                        await client.ping()
                        self._pub_ok = True
                        delay = self.backoff_initial_s
                        self._update_state()
                    if not self._sub_ok or not len(self.buffer):
                        continue
                    if self._needs_gate:
                        await self._await_subscribers(client)
                        self._needs_gate = False
                    await self._flush_batch(client)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.errors += 1
                    level = logging.DEBUG if isinstance(exc, _FAILURES) else logging.WARNING
                    log.log(level, "redis publish failed: %r", exc)
                    self._pub_ok = False
                    self._failed()
                    self.buffer.expire(time.monotonic())
                    await asyncio.sleep(delay)
                    delay = self._backoff(delay)
        finally:
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()

    async def _await_subscribers(self, client: aioredis.Redis) -> None:
        """After an outage, let peers resubscribe before the backlog goes out."""
        deadline = time.monotonic() + self.flush_grace_s
        while time.monotonic() < deadline and self._reach > 1:
            if await subscribers(client, self.sharded, self.channel) >= self._reach:
                return
            await self._send_urgent(client)
            await asyncio.sleep(0.02)

    async def _send_urgent(self, client: aioredis.Redis) -> None:
        urgent, self._urgent = self._urgent, None
        if urgent is not None:
            frame, to = urgent
            await publish(client, self.sharded, self.channel_for(to), frame)

    async def _flush_batch(self, client: aioredis.Redis) -> None:
        batch = self.buffer.peek(_BATCH)
        if not batch:
            return
        pipe = client.pipeline(transaction=False)
        for item in batch:
            publish(pipe, self.sharded, self.channel_for(item.to), item.frame)
        results = await pipe.execute()
        self.buffer.commit(len(batch))
        self.sent += len(batch)
        for item, reached in zip(batch, results, strict=True):
            if item.to is not None and item.to.startswith("r#"):
                continue  # a room channel: reaching nobody means nobody holds the room
            if item.to is not None and not reached:
                self.undeliverable += 1
            elif item.to is None and self._state == AdapterState.CONNECTED:
                self._reach = int(reached)

    def owner_of(self, sid: str) -> str | Owner:
        if not self.host:
            return Owner.ANY  # node ids are random: a sid does not name its owner
        owner = parse_sid(sid)
        if owner is None or not owner.host:
            return Owner.ANY
        return f"{owner.host}-{owner.slot:x}.{owner.generation:x}"

    def status(self) -> TransportStatus:
        return TransportStatus(
            sharded=self.sharded,
            rooms_subscribed=len(self.rooms.subscribed),
            transport_sent=self.sent,
            undeliverable_remote=self.undeliverable,
            transport_errors=self.errors,
            buffered=len(self.buffer),
            buffered_bytes=self.buffer.bytes,
            overflowed=self.buffer.overflowed,
            overflowed_bytes=self.buffer.overflowed_bytes,
            expired=self.buffer.expired,
            outages=self.outage.outages,
            reconnects=self.outage.reconnects,
        )

