"""The AMQP side of :mod:`.emitter`: publish to the durable exchange with confirms.

Kept apart so that HTTP and Redis users never import aio-pika.  The sync
``publish_sync`` runs one short-lived event loop per call (a Celery task has
no loop of its own); :class:`AmqpPublisher` keeps one connection for
``AsyncEmitter``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel
from aio_pika.exceptions import AMQPError

from worker.adapter.amqp_emitter import declare_emit_queue, durable_exchange

__all__ = ["AmqpPublisher", "publish_sync"]


class AmqpPublisher:
    def __init__(self, url: str, emitter_channel: str, timeout_s: float, *,
                 queue: str = "", queue_arguments: dict[str, Any] | None = None) -> None:
        self.url = url
        self.exchange_name = durable_exchange(emitter_channel)
        # The cluster's emit queue, declared here too (same arguments) so that
        # emits published before the cluster ever ran are kept, not unroutable.
        self.queue = queue
        self.queue_arguments = queue_arguments or {}
        self.timeout_s = timeout_s
        self._connection: Any = None
        self._exchange: Any = None

    async def publish(self, body: bytes) -> None:
        from .emitter import EmitterError

        try:
            if self._exchange is None or self._connection.is_closed:
                connection = self._connection = await aio_pika.connect(
                    self.url, timeout=self.timeout_s)

                async def open_channel() -> AbstractChannel:
                    return await connection.channel(publisher_confirms=True,
                                                    on_return_raises=True)

                if self.queue:
                    # (and the queue its expired emits are counted from)
                    channel, queue, _ = await declare_emit_queue(
                        open_channel, self.queue, self.queue_arguments)
                else:
                    channel, queue = await open_channel(), None
                exchange = await channel.declare_exchange(
                    self.exchange_name, aio_pika.ExchangeType.FANOUT, durable=True
                )
                if queue is not None:
                    await queue.bind(exchange)
                self._exchange = exchange
            # Confirmed, and mandatory: a full queue (reject-publish) or no queue
            # at all raises instead of losing the emit silently.
            await self._exchange.publish(
                aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                 content_type="application/json"),
                routing_key="", mandatory=True, timeout=self.timeout_s,
            )
        except (TimeoutError, AMQPError, OSError) as exc:
            self._exchange = None
            raise EmitterError(f"amqp publish to {self.exchange_name!r} failed: {exc!r}") from None

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = self._exchange = None


def publish_sync(url: str, emitter_channel: str, body: bytes, timeout_s: float,
                 **kwargs: Any) -> None:
    async def once() -> None:
        publisher = AmqpPublisher(url, emitter_channel, timeout_s, **kwargs)
        try:
            await publisher.publish(body)
        finally:
            await publisher.close()

    asyncio.run(once())
