"""The worker process, from its control socket to its exit, on uvloop.

1. read :class:`~worker.control.Configure` from the control socket;
2. import the app; on failure send :class:`~worker.control.BootFailed` and
   exit with :data:`~worker.control.BOOT_FAILED_EXIT` so the master stops
   instead of respawning;
3. start it (:meth:`~worker.server.WorkerRuntime.start`), with
   connection-state recovery when configured;
4. send :class:`~worker.control.Ready`, then a
   :class:`~worker.control.Heartbeat` from the event loop, while
   :class:`_ControlLoop` handles what the master says;
5. stop on :class:`~worker.control.Drain`, SIGTERM, or EOF on the control
   socket (the master is gone): :meth:`~worker.server.WorkerRuntime.stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
import traceback

from . import control, fastjson, gctune
from .adapter import ClusterManager
from .adapter.redis_backend import RedisTransport
from .app_loader import load_app
from .emit import apply_emit
from .exceptions import AppLoadError
from .libcontract import check as check_library_contract
from .libcontract import install_json
from .lifespan import LifespanFailed
from .logfilter import install_client_error_filter, unify_library_logging
from .logs import configure_logging
from .recovery.agent import RecoveryAgent
from .recovery.redis_store import RedisRecoveryLink
from .server import WorkerRuntime
from .singleton_runner import start_singletons

__all__ = ["run_worker"]

log = logging.getLogger("siocluster.worker")


async def _heartbeats(
    runtime: WorkerRuntime, writer: asyncio.StreamWriter, interval: float
) -> None:
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        await asyncio.sleep(interval)
        lag = max(0.0, loop.time() - started - interval)
        writer.write(control.encode(runtime.heartbeat(lag)))
        await writer.drain()


async def _watch_master(master_pid: int) -> None:
    """Backup for control-socket EOF: notice being re-parented."""
    while os.getppid() == master_pid:
        await asyncio.sleep(1.0)


async def _boot_failed(writer: asyncio.StreamWriter, error: str, tb: str) -> None:
    writer.write(control.encode(control.BootFailed(error=error, traceback=tb)))
    with contextlib.suppress(ConnectionError):
        await writer.drain()


async def _boot(msg: control.Configure, writer: asyncio.StreamWriter) -> WorkerRuntime | None:
    """Load the app and start serving it; None (after telling the master why) if it fails."""
    config = msg.config
    client_errors = install_client_error_filter()
    try:
        loaded = await load_app(msg.app, factory=config.factory)
        if problems := check_library_contract(loaded.sio):
            raise AppLoadError(
                "siocluster was not built for the installed python-socketio/python-engineio "
                f"({'; '.join(problems)}); install the versions pinned in its pyproject")
    except AppLoadError as exc:
        await _boot_failed(writer, str(exc),
                           "".join(traceback.format_exception(exc.__cause__ or exc)))
        return None
    unify_library_logging()  # the app's server attached engineio's own handler
    install_json(loaded.sio, fastjson)  # msgspec, unless the app passed json=...
    runtime = WorkerRuntime(msg, config, loaded)
    runtime.client_errors = client_errors
    try:
        await runtime.start()
    except Exception as exc:
        tb = exc.details if isinstance(exc, LifespanFailed) else traceback.format_exc()
        await _boot_failed(writer, f"worker {msg.slot} could not start app {msg.app!r}: "
                                   f"{type(exc).__name__}: {exc}", tb)
        return None
    return runtime


async def _install_recovery(runtime: WorkerRuntime, manager: ClusterManager,
                            writer: asyncio.StreamWriter) -> None:
    """Connection-state recovery: the master's store (local), or Redis's (redis)."""
    config = runtime.config

    def send(message: control.ControlMessage) -> None:
        writer.write(control.encode(message))

    async def flow() -> None:
        """Backpressure: an emit waits while the channel to the master is over its
        high-water mark (the master stops reading it while a worker lags)."""
        if writer.transport.get_write_buffer_size():
            with contextlib.suppress(ConnectionError):  # the master is gone: we stop
                await writer.drain()

    link: RedisRecoveryLink | None = None
    if config.adapter.backend == "redis" and isinstance(manager.transport, RedisTransport):
        link = RedisRecoveryLink(
            manager.transport.subscriber_client, config.adapter.channel,
            window_s=config.recovery.max_disconnection_s,
            max_log_bytes=config.recovery.max_log_bytes,
            outage_buffer_bytes=config.adapter.outage_buffer_bytes,
        )
        send = link.send
    runtime.recovery = RecoveryAgent(
        runtime.loaded.sio, manager, send, skip_middlewares=config.recovery.skip_middlewares,
        flow=flow if link is None else None,  # Redis's link bounds its own writes
    )
    runtime.recovery.install()
    if link is not None:
        await link.start(runtime.recovery)
        runtime.recovery.link = link


class _ControlLoop:
    """What the master says while the worker serves: until Drain, or EOF (master gone)."""

    def __init__(self, runtime: WorkerRuntime, messages: control.MessageReader,
                 writer: asyncio.StreamWriter) -> None:
        self.runtime = runtime
        self.messages = messages
        self.writer = writer
        self.drain_timeout = runtime.config.graceful_timeout_s
        self.drain_spread = 0.0
        self._emits: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        while True:
            incoming = await self.messages.next()
            if incoming is None:
                log.warning("master is gone; stopping")
                self.drain_timeout = 1.0
                return
            if isinstance(incoming, control.Drain):
                self.drain_timeout = incoming.timeout_s
                self.drain_spread = min(incoming.spread_s, max(0.0, incoming.timeout_s / 2))
                return
            await self._handle(incoming)

    async def _handle(self, incoming: control.ControlMessage) -> None:
        runtime = self.runtime
        if isinstance(incoming, control.LeaseReply) and runtime.master_leases is not None:
            runtime.master_leases.on_reply(incoming)
        recovery = runtime.recovery
        if recovery is not None and isinstance(incoming, control.LogDeliver):
            await recovery.on_deliver(incoming)
        elif recovery is not None and isinstance(incoming, control.RestoreReply):
            recovery.on_restore_reply(incoming)
        elif isinstance(incoming, control.Emit):
            task = asyncio.create_task(apply_emit(runtime.loaded.sio, incoming, self.writer))
            self._emits.add(task)
            task.add_done_callback(self._emits.discard)


async def run_worker(control_fd: int, handoff_fd: int | None = None) -> int:
    sock = socket.socket(fileno=control_fd)
    sock.setblocking(False)
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    messages = control.MessageReader(reader)
    msg = await messages.next()
    if not isinstance(msg, control.Configure):
        return 1
    config = msg.config  # typed and checked by msgspec on the way in
    configure_logging(config.logging.level, config.logging.format, role="worker", slot=msg.slot)
    gctune.tune(config.gc_threshold)
    loop = asyncio.get_running_loop()

    runtime = await _boot(msg, writer)
    if runtime is None:
        return control.BOOT_FAILED_EXIT
    loaded = runtime.loaded
    if config.recovery.enabled and isinstance(runtime.adapter, ClusterManager):
        await _install_recovery(runtime, runtime.adapter, writer)
    if handoff_fd is not None:
        channel = socket.socket(fileno=handoff_fd)
        channel.setblocking(False)
        runtime.adopt_handoffs(channel)
    gctune.freeze_loaded(config.gc_freeze)  # the app is loaded and started
    loop.add_signal_handler(signal.SIGTERM, runtime.stopping.set)
    writer.write(control.encode(runtime.ready_message()))
    await writer.drain()
    log.info("serving %s on %s", msg.app, msg.socket_path)
    started_singletons = start_singletons(
        loaded.sio, writer, backend_name=config.adapter.backend,
        redis_url=config.adapter.redis_url, channel=config.adapter.channel,
        amqp_url=config.adapter.amqp_url, lease_s=config.singleton_lease_s,
        heartbeat_s=config.heartbeat_interval_s, slot=msg.slot, generation=msg.generation,
    )
    if started_singletons is not None:
        runtime.singletons, runtime.master_leases = started_singletons
    control_loop = _ControlLoop(runtime, messages, writer)

    tasks = [
        asyncio.create_task(control_loop.run()),
        asyncio.create_task(_heartbeats(runtime, writer, config.heartbeat_interval_s)),
        asyncio.create_task(_watch_master(msg.master_pid)),
        asyncio.create_task(runtime.stopping.wait()),
    ]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            log.warning("worker loop ended: %r", task.exception())
    started = time.monotonic()
    await runtime.stop(control_loop.drain_timeout, control_loop.drain_spread)
    log.info("stopped after %.2fs", time.monotonic() - started)
    writer.close()
    return 0
