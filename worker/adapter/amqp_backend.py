"""The ``amqp`` backend: cross-worker traffic through RabbitMQ (aio-pika).

Theory of operation
-------------------

Topology, declared by every worker (idempotent):

* one durable *topic* exchange named ``[adapter] channel``;
* one durable queue per worker, ``<channel>.node.<node>``, bound with the
  routing keys ``all`` (broadcasts and requests) and ``node.<node>`` (what is
  meant for this worker: replies, acks).  It is durable and expires
  (``x-expires``) a while after its worker is gone, instead of being
  exclusive: when the broker restarts, every worker's queue and bindings are
  back before any worker reconnects, so the backlog one worker flushes after
  the outage reaches peers that have not reconnected yet.  ``x-max-length``
  bounds what piles up for a worker that is gone; a worker that stops cleanly
  deletes its queue at once.

Sending: every frame goes through one :class:`~.buffer.OutageBuffer` and
leaves in order, in batches published on a channel with publisher confirms;
the batch is committed when the broker confirmed all of it.  A directed frame
is ``mandatory``: the broker returns it when its worker's queue is gone, and
it is counted as undeliverable.  A batch that failed half-way is re-sent
whole; receivers drop the duplicates by sequence number (:mod:`.sequence`).
Heartbeats are never buffered (stale after an outage).

Receiving: a consumer (no ack: the frames are cross-worker chatter, bounded by
the outage buffer on the sending side) feeds frames, in arrival order, to the
manager.

Outage: a lost connection makes the state DEGRADED; local clients are served,
cross-worker frames queue within the buffer's bounds (what does not fit is
counted and logged once per outage), the loop reconnects with exponential
backoff and jitter, and the backlog is flushed in order once it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time

import aio_pika
from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aio_pika.exceptions import ChannelClosed, PublishError

from ..control import TransportStatus
from .buffer import OutageBuffer
from .outage import Outages
from .transport import AdapterState, Owner, TransportEvents

__all__ = ["AmqpTransport"]

log = logging.getLogger("siocluster.adapter.amqp")

_BATCH = 64
_QUEUE_EXPIRES_MS = 60_000
_QUEUE_MAX_LENGTH = 100_000


class AmqpTransport:
    name = "amqp"
    dynamic_rooms = False

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
        connect_timeout_s: float = 5.0,
        start_timeout_s: float = 5.0,
        backoff_initial_s: float = 0.05,
        backoff_max_s: float = 2.0,
    ) -> None:
        self.url = url
        self.node = f"{slot:x}.{generation:x}.{secrets.token_hex(4)}"
        self.exchange_name = channel
        self.queue_name = f"{channel}.node.{self.node}"
        self.buffer = OutageBuffer(max_age_s=outage_buffer_s, max_bytes=outage_buffer_bytes)
        self.outage = Outages("rabbitmq", self.buffer, log)
        self.connect_timeout_s = connect_timeout_s
        self.start_timeout_s = start_timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self._state = AdapterState.CONNECTING
        self._events: TransportEvents | None = None
        self._exchange: AbstractExchange | None = None  # set while connected
        self._queue: AbstractQueue | None = None  # this worker's queue, while connected
        self._healthy = asyncio.Event()
        self._wake = asyncio.Event()
        self._lost = asyncio.Event()
        self._incoming: asyncio.Queue[bytes] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._urgent: tuple[bytes, str | None] | None = None
        self._refused = ""
        # Counters
        self.sent = 0
        self.undeliverable = 0
        self.errors = 0

    @staticmethod
    def routing_key(node: str | None) -> str:
        return "all" if node is None else f"node.{node}"

    @property
    def state(self) -> AdapterState:
        return self._state

    def _set_state(self, new: AdapterState) -> None:
        if self._state in (AdapterState.CLOSED, new):
            return
        log.info("amqp adapter %s: %s -> %s", self.node, self._state.name, new.name)
        if new == AdapterState.DEGRADED:
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

    # Lifecycle

    async def start(self, events: TransportEvents) -> None:
        self._events = events
        self._tasks = [
            asyncio.create_task(self._connect_forever()),
            asyncio.create_task(self._send_forever()),
            asyncio.create_task(self._dispatch_forever()),
        ]
        try:
            async with asyncio.timeout(self.start_timeout_s):
                await self._healthy.wait()
        except TimeoutError:
            log.warning("rabbitmq not reachable at start; starting degraded")
            self._set_state(AdapterState.DEGRADED)

    async def close(self) -> None:
        if self._state == AdapterState.CONNECTED:
            deadline = time.monotonic() + 1.0
            while len(self.buffer) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            # A clean exit removes this worker's queue now, rather than letting
            # broadcasts pile up in it until x-expires.
            if self._queue is not None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(1.0):
                        await self._queue.delete(if_unused=False, if_empty=False)
        self._state = AdapterState.CLOSED
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # Connection and receiving

    async def _connect_forever(self) -> None:
        delay = self.backoff_initial_s
        while True:
            connection: AbstractRobustConnection | None = None
            self._lost.clear()
            try:
                # Plain (not robust) connection: reconnecting, redeclaring and
                # replaying the backlog is this loop's job, in one place.
                connection = await aio_pika.connect(  # type: ignore[assignment]
                    self.url, timeout=self.connect_timeout_s
                )
                assert connection is not None
                connection.close_callbacks.add(lambda *_: self._lost.set())
                consume = await connection.channel()
                exchange = await consume.declare_exchange(
                    self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
                )
                queue = await consume.declare_queue(
                    self.queue_name, durable=True,
                    arguments={"x-expires": _QUEUE_EXPIRES_MS,
                               "x-max-length": _QUEUE_MAX_LENGTH},
                )
                await queue.bind(exchange, self.routing_key(None))
                await queue.bind(exchange, self.routing_key(self.node))
                publish = await connection.channel(
                    publisher_confirms=True, on_return_raises=True
                )
                publish.close_callbacks.add(lambda *_: self._lost.set())
                consume.close_callbacks.add(lambda *_: self._lost.set())
                self._exchange = await publish.get_exchange(self.exchange_name)
                await queue.consume(self._on_message, no_ack=True)
                self._queue = queue
                delay = self.backoff_initial_s
                self._set_state(AdapterState.CONNECTED)
                self._wake.set()
                await self._lost.wait()
                log.debug("amqp connection lost")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.errors += 1
                if isinstance(exc, ChannelClosed) and str(exc) != self._refused:
                    # Not an outage: the broker refused a declaration (e.g. the
                    # exchange [adapter] channel exists with another type).
                    self._refused = str(exc)
                    log.warning("rabbitmq refused the adapter's exchange or queue: %s", exc)
                else:
                    log.debug("amqp connect failed: %r", exc)
            finally:
                self._exchange = self._queue = None
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await connection.close()
            if self._state == AdapterState.CLOSED:
                return
            self._set_state(AdapterState.DEGRADED)
            await asyncio.sleep(delay)
            delay = min(self.backoff_max_s, delay * 2) * random.uniform(0.8, 1.2)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        # Called in delivery order; the queue keeps that order for the dispatcher.
        self._incoming.put_nowait(message.body)

    async def _dispatch_forever(self) -> None:
        while True:
            frame = await self._incoming.get()
            assert self._events is not None
            await self._events.frame_received(frame)

    # Sending

    def send_room(self, frame: bytes, key: str) -> None:
        self.send(frame, None)  # no room channels here: every worker hears it

    def interest(self, key: str, on: bool) -> None:
        return None

    def send(self, frame: bytes, to: str | None, *, bufferable: bool = True) -> None:
        if not bufferable:
            if self._state == AdapterState.CONNECTED:
                self._urgent = (frame, to)
                self._wake.set()
            return
        self.outage.buffer_frame(frame, to)
        self._wake.set()

    async def _publish(self, exchange: AbstractExchange, frame: bytes, to: str | None) -> None:
        await exchange.publish(
            aio_pika.Message(frame, delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT),
            routing_key=self.routing_key(to), mandatory=to is not None,
        )

    async def _send_forever(self) -> None:
        while True:
            exchange = self._exchange
            if exchange is None or (not len(self.buffer) and self._urgent is None):
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await self._wake.wait()
                self.buffer.expire(time.monotonic())
                continue
            try:
                urgent, self._urgent = self._urgent, None
                if urgent is not None:
                    with contextlib.suppress(PublishError):
                        await self._publish(exchange, *urgent)
                batch = self.buffer.peek(_BATCH)
                if not batch:
                    continue
                results = await asyncio.gather(
                    *(self._publish(exchange, item.frame, item.to) for item in batch),
                    return_exceptions=True,
                )
                failures = [r for r in results
                            if isinstance(r, BaseException) and not isinstance(r, PublishError)]
                if failures:
                    raise failures[0]
                self.undeliverable += sum(isinstance(r, PublishError) for r in results)
                self.buffer.commit(len(batch))
                self.sent += len(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The whole batch stays queued and is re-sent once reconnected.
                self.errors += 1
                log.debug("amqp publish failed: %r", exc)
                self._exchange = None
                self._lost.set()
                self.buffer.expire(time.monotonic())
                await asyncio.sleep(self.backoff_initial_s)

    def owner_of(self, sid: str) -> str | Owner:
        return Owner.ANY

    def status(self) -> TransportStatus:
        return TransportStatus(
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
