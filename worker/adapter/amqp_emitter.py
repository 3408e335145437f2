"""Emits published to RabbitMQ from outside the cluster, kept while it is down.

Theory of operation
-------------------

Two exchanges feed one queue:

* ``<emitter_channel>`` (``socketio`` by default), a *fanout, non-durable*
  exchange: exactly how python-socketio's ``AsyncAioPikaManager`` and
  ``KombuManager`` declare their channel, so their write-only instances
  publish into it unchanged (declaring it durable would make their own
  declaration fail with PRECONDITION_FAILED);
* ``<emitter_channel>.durable``, a *fanout, durable* exchange: what
  :mod:`supervisor.emitter` publishes to (persistent messages, publisher
  confirms).  It and its binding survive a broker restart.

The queue, ``<[adapter] channel>.emit``, is durable, shared by every worker
of the cluster (competing consumers) and bounded: ``x-message-ttl``
(``emitter_queue_ttl_s``) and ``x-max-length`` (``emitter_queue_max``, with
``reject-publish``: a publisher with confirms, such as ours, is told; nothing
already queued is dropped).  So an emit published while the cluster is down or
restarting waits there and is delivered when a worker comes back, within
those bounds.

``x-single-active-consumer``: one worker at a time consumes (another takes
over when it goes), so external emits keep their publishing order.  That
worker applies each message *through the adapter* (``broadcast=True``): its
own clients directly, the other workers' through the cross-worker transport;
each client gets it once.  A message is acknowledged only once handed to the
adapter; a worker that dies before that leaves it to be redelivered to the
next one (at least once).

A fresh worker waits ``start_delay_s`` (``emitter_consume_delay_s``) before
it consumes: after the whole cluster was down, the clients need a moment to
reconnect, or the backlog would be delivered to nobody.

What the TTL drops is counted, not lost silently: the queue dead-letters its
expired messages (through the default exchange) to ``<queue>.expired``, which
every worker consumes and acknowledges, counting each as refused for reason
``expired`` (``siocluster_external_refused``), logged once.  That queue keeps
at most as many messages as the emit queue (``drop-head``), for when no
worker runs.  An emit queue declared by an earlier release, without
dead-lettering, is used as it is (RabbitMQ cannot add arguments to a queue):
its expired messages stay uncounted, which the worker says once
(:func:`declare_emit_queue`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue
from aio_pika.exceptions import ChannelClosed, ChannelPreconditionFailed

from ..control import ExternalStatus
from .external import Refused, parse_message

if TYPE_CHECKING:
    from .manager import ClusterManager

__all__ = ["AmqpEmitSource", "declare_emit_queue", "durable_exchange", "emit_queue_arguments",
           "expired_queue"]

log = logging.getLogger("siocluster.adapter.amqp")


def durable_exchange(emitter_channel: str) -> str:
    return f"{emitter_channel}.durable"


def emit_queue_arguments(ttl_s: float, max_messages: int) -> dict[str, Any]:
    """The emit queue's arguments; whoever declares it must use exactly these."""
    args: dict[str, Any] = {"x-single-active-consumer": True}
    if ttl_s:
        args["x-message-ttl"] = int(ttl_s * 1000)
    if max_messages:
        args["x-max-length"] = max_messages
        args["x-overflow"] = "reject-publish"
    return args


# What <queue>.expired keeps when the emit queue has no length bound.
_EXPIRED_MAX = 100_000


def expired_queue(queue: str) -> str:
    return f"{queue}.expired"


def _dead_lettered(queue: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """The emit queue's arguments with its expired messages routed to ``<queue>.expired``."""
    return {**arguments, "x-dead-letter-exchange": "",  # the default exchange: by name
            "x-dead-letter-routing-key": expired_queue(queue)}


async def declare_emit_queue(
    open_channel: Callable[[], Awaitable[AbstractChannel]], name: str,
    arguments: dict[str, Any],
) -> tuple[AbstractChannel, AbstractQueue, bool]:
    """Declare the emit queue ``name`` (``arguments``: :func:`emit_queue_arguments`)
    and, when it has a TTL, ``<name>.expired`` that its expired messages go to.

    Returns the channel to use (a refusal closes one), the queue, and whether its
    expired messages are dead-lettered: not when it has no TTL, nor when it
    exists from an earlier release without dead-lettering (then it is declared
    with ``arguments`` as they were; a queue with other settings still fails).
    """
    channel = await open_channel()
    if "x-message-ttl" not in arguments:
        return channel, await channel.declare_queue(name, durable=True, arguments=arguments), \
            False
    await channel.declare_queue(expired_queue(name), durable=True, arguments={
        "x-max-length": arguments.get("x-max-length", _EXPIRED_MAX)})
    try:
        queue = await channel.declare_queue(name, durable=True,
                                            arguments=_dead_lettered(name, arguments))
        return channel, queue, True
    except ChannelPreconditionFailed:
        channel = await open_channel()  # the broker closed the other one
        return channel, await channel.declare_queue(name, durable=True, arguments=arguments), \
            False


async def _consuming_channel(connection: AbstractConnection) -> AbstractChannel:
    channel = await connection.channel()
    # One at a time: order is kept, and an unacked message is redelivered if
    # this worker dies with it.
    await channel.set_qos(prefetch_count=1)
    return channel


class AmqpEmitSource:
    name = "amqp"

    def __init__(
        self,
        url: str,
        emitter_channel: str,
        queue: str,
        *,
        # Limits
        ttl_s: float,
        max_messages: int,
        # Timeouts
        start_delay_s: float = 0.0,
        connect_timeout_s: float = 5.0,
        backoff_initial_s: float = 0.05,
        backoff_max_s: float = 2.0,
    ) -> None:
        self.url = url
        self.compat_exchange = emitter_channel
        self.durable_exchange = durable_exchange(emitter_channel)
        self.queue_name = queue
        self.ttl_s = ttl_s
        self.max_messages = max_messages
        self.start_delay_s = start_delay_s
        self.connect_timeout_s = connect_timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.connected = asyncio.Event()
        self.waiting = start_delay_s > 0
        self.last_error = ""
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._manager: ClusterManager | None = None
        # Counters
        self.received = 0
        self.errors = 0
        self.reconnects = 0
        self.uncounted_warned = False  # the queue does not dead-letter (said once)

    def queue_arguments(self) -> dict[str, Any]:
        return emit_queue_arguments(self.ttl_s, self.max_messages)

    async def start(self, manager: ClusterManager) -> None:
        self._manager = manager
        self._task = asyncio.create_task(self._consume_forever())
        if self.start_delay_s:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(manager.request_timeout_s):
                await self.connected.wait()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def status(self) -> ExternalStatus:
        state = "degraded"
        if self.connected.is_set():
            state = "connected"
        elif self.waiting:
            state = "waiting"  # emitter_consume_delay_s after start
        return ExternalStatus(
            queue=self.queue_name,
            state=state,
            error=self.last_error,
            received=self.received,
            errors=self.errors,
            reconnects=self.reconnects,
        )

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        assert self._manager is not None
        self.received += 1
        op = parse_message(message.body)
        try:
            if isinstance(op, Refused):
                self._manager.refuse(self.name, op)
            elif op is not None:
                await self._manager.apply_external(op, source=self.name, broadcast=True)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.errors += 1
            log.exception("applying a message from queue %r failed", self.queue_name)
        # Refused and failed messages are acknowledged too: redelivering them
        # would fail the same way, forever.
        with contextlib.suppress(Exception):
            await message.ack()

    async def _on_expired(self, message: AbstractIncomingMessage) -> None:
        """A message the emit queue dropped for age: counted, then gone."""
        assert self._manager is not None
        self._manager.refuse(self.name, Refused(
            "expired", f"older than emitter_queue_ttl_s in queue {self.queue_name!r} before "
                       "a worker took it (dropped by RabbitMQ)"))
        with contextlib.suppress(Exception):
            await message.ack()

    async def _consume_forever(self) -> None:
        delay = self.backoff_initial_s
        ever = False
        await asyncio.sleep(self.start_delay_s)
        self.waiting = False
        while True:
            connection: AbstractConnection | None = None
            self._lost.clear()
            try:
                connection = await aio_pika.connect(self.url, timeout=self.connect_timeout_s)
                connection.close_callbacks.add(lambda *_: self._lost.set())
                channel, queue, dead_lettered = await declare_emit_queue(
                    functools.partial(_consuming_channel, connection), self.queue_name,
                    self.queue_arguments())
                channel.close_callbacks.add(lambda *_: self._lost.set())
                compat = await channel.declare_exchange(
                    self.compat_exchange, aio_pika.ExchangeType.FANOUT
                )
                durable = await channel.declare_exchange(
                    self.durable_exchange, aio_pika.ExchangeType.FANOUT, durable=True
                )
                await queue.bind(compat)
                await queue.bind(durable)
                await queue.consume(self._on_message)
                if dead_lettered:
                    expired = await channel.get_queue(expired_queue(self.queue_name),
                                                      ensure=False)
                    await expired.consume(self._on_expired)
                elif self.ttl_s and not self.uncounted_warned:
                    self.uncounted_warned = True
                    log.warning("amqp emit queue %r was declared without dead-lettering (by "
                                "an earlier siocluster): the emits it drops after "
                                "emitter_queue_ttl_s are not counted; delete the queue while "
                                "it is empty to have them counted", self.queue_name)
                if ever:
                    self.reconnects += 1
                ever = True
                self.connected.set()
                self.last_error = ""
                delay = self.backoff_initial_s
                await self._lost.wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.errors += 1
                error = str(exc) or repr(exc)
                if isinstance(exc, ChannelClosed):
                    # Not an outage: the broker refused (e.g. the queue exists with
                    # other arguments).  Say so once per distinct reason.
                    if error != self.last_error:
                        log.warning("amqp emit queue %r refused by the broker: %s; external "
                                    "emits wait until this is fixed (delete the queue or "
                                    "restore its previous emitter_queue_* settings)",
                                    self.queue_name, error)
                else:
                    log.debug("amqp emit queue %r: %r", self.queue_name, exc)
                self.last_error = error
            finally:
                self.connected.clear()
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await connection.close()
            await asyncio.sleep(delay)
            delay = min(self.backoff_max_s, delay * 2) * random.uniform(0.8, 1.2)
