"""Cross-worker adapter: the entry point the worker runtime calls.

:func:`install_adapter` replaces the app's client manager with a
:class:`~.manager.ClusterManager`, connects it to the other workers and
subscribes *before* returning (python-socketio would only subscribe at the
first client connection, leaving a fresh worker deaf), and returns an
:class:`AdapterHandle` for status and shutdown.

Backends (``config.adapter.backend``):

* ``local`` (default): Unix sockets between the workers of this host, in
  ``runtime_dir`` (:mod:`.local`);
* ``redis``: Redis pub/sub, sharded on Redis >= 7 (:mod:`.redis_backend`);
* ``amqp``: RabbitMQ through aio-pika (:mod:`.amqp_backend`);
* ``none``: python-socketio's own in-process manager is left alone.

Emits from outside the cluster: with ``redis``, every worker also listens on
``emitter_channel`` for python-socketio's write-only managers
(:mod:`.redis_emitter`); with ``amqp``, one worker at a time consumes a
durable queue fed by python-socketio's AMQP managers and siocluster's Emitter
(:mod:`.amqp_emitter`).

The user reaches the cluster API through ``sio.manager`` (``fetch_sockets``,
``server_side_emit``, ``on_server_side``, ``sockets_join`` ...; see
:class:`~.manager.ClusterManager`).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from ..config import WorkerConfig
from ..control import AdapterStatus
from .amqp_backend import AmqpTransport
from .amqp_emitter import AmqpEmitSource
from .envelope import Codec
from .exceptions import (
    AdapterError,
    BackendError,
    EncodingError,
    ProtocolError,
    RequestTimeout,
    UnsupportedVersion,
)
from .local import LocalTransport
from .manager import ClusterManager, SocketInfo
from .redis_backend import RedisTransport
from .redis_emitter import RedisEmitterSource
from .transport import AdapterState, Transport

__all__ = [
    "AdapterError",
    "AdapterHandle",
    "AdapterState",
    "BackendError",
    "ClusterManager",
    "EncodingError",
    "ProtocolError",
    "RequestTimeout",
    "SocketInfo",
    "UnsupportedVersion",
    "install_adapter",
]

log = logging.getLogger("siocluster.adapter")


class AdapterHandle(Protocol):
    def status(self) -> AdapterStatus: ...

    async def close(self) -> None: ...


class _NoAdapter:
    def status(self) -> AdapterStatus:
        return AdapterStatus(backend="none", state="disabled")

    async def close(self) -> None:
        return None


def _transport(config: WorkerConfig, slot: int, generation: int, runtime_dir: str) -> Transport:
    ac = config.adapter
    if ac.backend == "local":
        return LocalTransport(
            runtime_dir, slot, generation, scan_interval_s=ac.heartbeat_interval_s
        )
    if ac.backend == "redis":
        return RedisTransport(
            ac.redis_url, ac.channel, slot, generation,
            outage_buffer_s=ac.outage_buffer_s,
            outage_buffer_bytes=ac.outage_buffer_bytes,
            start_timeout_s=ac.request_timeout_s,
            host=config.host_id,
        )
    if ac.backend == "amqp":
        return AmqpTransport(
            ac.amqp_url, ac.channel, slot, generation,
            outage_buffer_s=ac.outage_buffer_s,
            outage_buffer_bytes=ac.outage_buffer_bytes,
            start_timeout_s=ac.request_timeout_s,
        )
    raise BackendError(f"unknown adapter backend {ac.backend!r}")


async def install_adapter(
    sio: Any, config: WorkerConfig, *, slot: int, generation: int, runtime_dir: str
) -> AdapterHandle:
    """Replace ``sio.manager`` and subscribe; call inside the running loop, before listening."""
    ac = config.adapter
    if ac.backend == "none":
        return _NoAdapter()
    if sio.eio.sockets:
        raise AdapterError("install_adapter must run before the server accepts connections")
    transport = _transport(config, slot, generation, runtime_dir)
    manager = ClusterManager(
        transport,
        request_timeout_s=ac.request_timeout_s,
        heartbeat_interval_s=ac.heartbeat_interval_s,
        codec=Codec.MSGPACK,
    )
    if getattr(sio.manager, "logger", None) is not None:
        manager.logger = sio.manager.logger
    sio.manager = manager
    manager.set_server(sio)
    await manager.start()
    if isinstance(transport, RedisTransport) and ac.emitter_channel:
        await manager.attach_source(
            RedisEmitterSource(transport.subscriber_client, ac.emitter_channel)
        )
    if isinstance(transport, AmqpTransport) and ac.emitter_channel:
        await manager.attach_source(AmqpEmitSource(
            ac.amqp_url, ac.emitter_channel, f"{ac.channel}.emit",
            ttl_s=ac.emitter_queue_ttl_s, max_messages=ac.emitter_queue_max,
            start_delay_s=ac.emitter_consume_delay_s,
        ))
    # We subscribed eagerly; python-socketio must not initialize it again.
    sio.manager_initialized = True
    log.info("adapter %s up as node %s (%s)", ac.backend, manager.node,
             manager.transport.state.name.lower())
    return manager
