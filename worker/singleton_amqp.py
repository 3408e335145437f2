"""The RabbitMQ lease backend for ``@singleton`` (adapter backend ``amqp``): one holder
across every host.

Theory of operation
-------------------
RabbitMQ has no key with an expiry and no compare-and-set, but it has one
lock: an *exclusive* queue belongs to the connection that declared it, no
other connection can declare it (``RESOURCE_LOCKED``), and the broker deletes
it when that connection closes.  Each worker opens one connection per
singleton ``N`` for its lease, and:

* ``<channel>.singleton.<N>``: the lock, exclusive.  A worker that declares it
  holds the lease; a renewal is a passive declare (one round trip that proves
  the connection, and with it the lock, still stands); a release deletes it.
  A candidate first asks whether it exists with a *mandatory* publish, which
  the broker returns when there is no such queue: a declare that fails makes
  the broker close the channel, and aio-pika keeps a callback of every channel
  the broker closed until the connection closes.  So only candidates that saw
  the lock free declare it, and one that loses that race closes its
  connection (it holds nothing on it) and opens a new one at its next poll.
* ``<channel>.singleton.<N>.tenures``: durable, one persistent message per
  tenure, never consumed.  Only the lock's holder publishes to it, so its
  message count after the publish is the new tenure's fencing token.
* ``<channel>.singleton.<N>.holder``: durable, at most one message (the newest
  wins): who holds the lease, for every host's /status.  Others read it and
  put it back; that race can only hide the record from one poll.

The fence is time, as with the other backends (:mod:`worker.lease`).  A
holder that stops (SIGSTOP, a blocked loop, a lost network) stops sending;
the broker closes its connection, freeing the lock, only after its
heartbeat receiver saw nothing for two checks: the connection's heartbeat
timeout is :func:`worker.lease.amqp_heartbeat_s`, long enough that the
holder's own clock has ended its tenure by then.  A holder that dies closes
its connection at once (the kernel sends the FIN), so the next poll of any
candidate takes the lease.

A lease connection that closes under a live holder (the broker restarted, the
network reset it) frees the lock at once, so the holder must stop at once
too, not when its validity runs out: the connection's close callback tells
the runner, which cancels the function (:meth:`AmqpLeases.set_lost_hook`).
The worker never closes a lease connection itself while it holds the lease,
except through :meth:`~worker.singleton_runner.SingletonRunner.stop`, which
cancels the function first.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractQueue
from aio_pika.exceptions import (
    AMQPError,
    ChannelClosed,
    ChannelInvalidStateError,
    DeliveryError,
)

from .lease import Grant, amqp_heartbeat_s
from .singleton_runner import (
    LeaseBackendError,
    broker_holder,
    grant_from_record,
    tenure_record,
)

__all__ = ["AmqpLeases"]

_CONNECT_TIMEOUT_S = 5.0
_RETRY_S = 0.25  # the first retry after a failed connection; then doubling
# What aio-pika raises when the broker or the connection goes (RuntimeError: a
# channel asked of a connection that just closed).
_ERRORS = (AMQPError, ChannelInvalidStateError, OSError, TimeoutError, RuntimeError)


@dataclass
class _Lease:
    """One singleton's connection, its channel, and the tenure held on it."""

    connection: AbstractConnection | None = None
    channel: AbstractChannel | None = None  # probes, reads, the tenure's bookkeeping
    held: Grant | None = None
    # Connecting runs in a task of its own: a poll's timeout cancels the poll, not
    # the connection (a fresh broker can take longer to answer than a poll lasts).
    connecting: asyncio.Task[AbstractConnection] | None = None
    failures: int = 0  # connections in a row that failed
    retry_at: float = 0.0  # monotonic: no new attempt before (backoff)


class AmqpLeases:
    def __init__(
        self, url: str, channel: str, *, slot: int, generation: int, lease_s: float
    ) -> None:
        self.me = broker_holder(slot, generation)
        self.prefix = f"{channel}.singleton."
        # Our own heartbeat, whatever the adapter's URL says: the fence depends on it.
        parts = urlsplit(url)
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                 if k != "heartbeat"]
        query.append(("heartbeat", str(amqp_heartbeat_s(lease_s))))
        self.url = urlunsplit(parts._replace(query=urlencode(query)))
        self.lease_s = lease_s
        self._leases: dict[str, _Lease] = {}
        self._lost: Callable[[str], None] = lambda name: None
        self._closing: set[asyncio.Task[None]] = set()

    def set_lost_hook(self, lost: Callable[[str], None]) -> None:
        """``lost(name)`` is called the moment a held lease's connection closes."""
        self._lost = lost

    async def _open(self, name: str, lease: _Lease) -> AbstractChannel:
        if lease.connection is None or lease.connection.is_closed:
            lease.connection = lease.channel = None
            lease.held = None  # (its close callback already told the runner)
            lease.connection = await self._connect(name, lease)
        if lease.channel is None or lease.channel.is_closed:
            lease.channel = await lease.connection.channel(
                publisher_confirms=True, on_return_raises=True)
        return lease.channel

    async def _connect(self, name: str, lease: _Lease) -> AbstractConnection:
        task = lease.connecting
        if task is None:
            if time.monotonic() < lease.retry_at:
                raise LeaseBackendError("amqp: not connected (retrying)")
            task = lease.connecting = asyncio.get_running_loop().create_task(
                aio_pika.connect(self.url, timeout=_CONNECT_TIMEOUT_S))
        await asyncio.wait({task})  # a poll's timeout cancels this wait, not the task
        lease.connecting = None
        try:
            connection = task.result()
        except _ERRORS as exc:
            # aiormq logs each failed attempt: back off, up to five leases.
            lease.failures += 1
            delay = min(5 * self.lease_s, _RETRY_S * 2 ** min(lease.failures, 16))
            lease.retry_at = time.monotonic() + delay
            raise LeaseBackendError(f"amqp: {exc!r}") from exc
        lease.failures = 0
        connection.close_callbacks.add(lambda *_: self._closed(name, connection))
        return connection

    def _closed(self, name: str, connection: AbstractConnection) -> None:
        lease = self._leases.get(name)
        if lease is not None and lease.connection is connection and lease.held is not None:
            lease.held = None
            self._lost(name)

    async def _drop(self, name: str, lease: _Lease) -> None:
        """Close the lease's connection (the caller made sure nothing runs under it)."""
        if lease.held is not None:
            lease.held = None
            self._lost(name)
        connection, lease.connection, lease.channel = lease.connection, None, None
        if connection is not None and not connection.is_closed:
            await connection.close()

    async def request(self, name: str, seq: int, eligible: bool) -> tuple[bool, Grant | None]:
        lease = self._leases.setdefault(name, _Lease())
        try:
            return await self._request(name, lease, eligible)
        except _ERRORS as exc:
            # Stop first: closing the connection frees the lock for the others.
            await self._drop(name, lease)
            raise LeaseBackendError(f"amqp: {exc!r}") from exc

    async def _request(self, name: str, lease: _Lease, eligible: bool
                       ) -> tuple[bool, Grant | None]:
        chan = await self._open(name, lease)
        lock = self.prefix + name
        if lease.held is not None:
            await chan.declare_queue(lock, passive=True)  # fails only if the lock is gone
            return True, lease.held
        if eligible and await self._lock_free(chan, lock):
            return await self._take(name, lease, chan, lock)
        return False, await self._read_holder(chan, name)

    async def _take(self, name: str, lease: _Lease, chan: AbstractChannel, lock: str
                    ) -> tuple[bool, Grant | None]:
        connection = lease.connection
        assert connection is not None
        try:
            taker = await connection.channel()
            try:
                await taker.declare_queue(lock, exclusive=True, arguments={"x-max-length": 0})
            except ChannelClosed:  # RESOURCE_LOCKED: another candidate was first
                self._abandon(lease)
                return False, None
            await taker.close()
            grant = await self._new_tenure(chan, name)
        except BaseException:
            # The lock may be ours with no tenure behind it (an error, or the
            # runner's timeout cancelled us): give it up with the connection.
            self._abandon(lease)
            raise
        lease.held = grant
        return True, grant

    def _abandon(self, lease: _Lease) -> None:
        """Close the connection of a lease not held (in the background: this may run
        in a cancelled task); the next poll opens a new one."""
        connection, lease.connection, lease.channel = lease.connection, None, None
        if connection is not None and not connection.is_closed:
            task = asyncio.get_running_loop().create_task(self._close_quietly(connection))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    @staticmethod
    async def _close_quietly(connection: AbstractConnection) -> None:
        with contextlib.suppress(*_ERRORS):
            await connection.close()

    async def _lock_free(self, chan: AbstractChannel, lock: str) -> bool:
        """Whether no queue named ``lock`` exists (the broker returns a mandatory
        message it cannot route; the lock's ``x-max-length`` of 0 drops the others)."""
        try:
            await chan.default_exchange.publish(aio_pika.Message(b""), routing_key=lock,
                                                mandatory=True)
        except DeliveryError:
            return True
        return False

    async def _new_tenure(self, chan: AbstractChannel, name: str) -> Grant:
        tenures = await chan.declare_queue(self.prefix + name + ".tenures", durable=True)
        await chan.default_exchange.publish(
            aio_pika.Message(b"", delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=tenures.name,
        )
        counted = await chan.declare_queue(tenures.name, passive=True)
        count = counted.declaration_result.message_count
        grant = Grant(self.me, int(count or 1), time.time())
        record = tenure_record(self.me, token=grant.token, since=grant.since)
        holder = await self._holder_queue(chan, name)
        await chan.default_exchange.publish(
            aio_pika.Message(record.encode(),
                             delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=holder.name,
        )
        return grant

    async def _holder_queue(self, chan: AbstractChannel, name: str) -> AbstractQueue:
        return await chan.declare_queue(
            self.prefix + name + ".holder", durable=True,
            arguments={"x-max-length": 1, "x-overflow": "drop-head"},
        )

    async def _read_holder(self, chan: AbstractChannel, name: str) -> Grant | None:
        queue = await self._holder_queue(chan, name)
        message = await queue.get(no_ack=False, fail=False)
        if message is None:
            return None
        await message.reject(requeue=True)
        return grant_from_record(message.body)

    async def release(self, name: str, token: int) -> None:
        """The runner stopped the function: free the lock for the next holder."""
        lease = self._leases.get(name)
        if lease is None or lease.held is None or lease.held.token != token:
            return
        lease.held = None
        try:
            if lease.channel is not None:
                await lease.channel.queue_delete(self.prefix + name)
        except _ERRORS as exc:
            raise LeaseBackendError(f"amqp: {exc!r}") from exc

    async def close(self) -> None:
        if any(lease.held is not None for lease in self._leases.values()):
            # A function that ignored its cancellation may still run (the runner
            # lets its lease lapse, as with Redis): keep the lock past its validity.
            await asyncio.sleep(self.lease_s)
        for name, lease in list(self._leases.items()):
            lease.held = None
            task, lease.connecting = lease.connecting, None
            if task is not None and not task.done():
                task.cancel()
            elif task is not None and not task.cancelled() and task.exception() is None:
                lease.connection = task.result()  # made after the last poll: close it too
            await self._drop(name, lease)
        if self._closing:
            await asyncio.wait(self._closing, timeout=_CONNECT_TIMEOUT_S)
