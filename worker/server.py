"""One worker: the user's Socket.IO app on a private Unix socket, on uvloop.

The app is served by an :class:`~worker.serving.AppServer`: aiohttp for
aiohttp apps, uvicorn's protocols for ASGI apps; the runtime below does not
know which.

Lifecycle, owned by :class:`WorkerRuntime`:

1. read :class:`~worker.control.Configure` from the control socket;
2. import the app; on failure send :class:`BootFailed` and exit with
   :data:`BOOT_FAILED_EXIT` so the master stops instead of respawning;
3. make Engine.IO mint routable sids, trust the master's X-Forwarded-* headers,
   install the cross-worker adapter and subscribe it, run the app's own
   startup (aiohttp's on_startup, the ASGI lifespan), listen;
4. send :class:`Ready`, then a :class:`Heartbeat` from the event loop;
5. stop on :class:`Drain`, SIGTERM, or EOF on the control socket (the master is
   gone): close every Engine.IO session so clients reconnect elsewhere, then
   close the server, whose last step is the app's own shutdown.
   :meth:`WorkerRuntime.stop` is the one place that order is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import signal
import socket
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from balancer.forwarding import TrustedProxies
from balancer.handoff import decode_handoff
from balancer.sid import mint_sid

from . import control, fastjson
from .adapter import AdapterHandle, ClusterManager, install_adapter
from .adapter.redis_backend import RedisTransport
from .admin_ui import ClusterAdmin
from .app_loader import LoadedApp, load_app
from .config import WorkerConfig
from .drain import UPGRADE_GRACE_S, close_session, close_spread
from .emit import apply_emit
from .exceptions import AppLoadError
from .guards import Guards, install_guards
from .libcontract import check as check_library_contract
from .libcontract import driver_table, install_json, replace_driver_table
from .lifespan import LifespanFailed
from .logfilter import ClientErrorFilter, install_client_error_filter, unify_library_logging
from .logs import configure_logging
from .outbound import install_outbound_queues
from .recovery.agent import RecoveryAgent
from .recovery.redis_store import RedisRecoveryLink
from .serving import AppServer, build_server
from .singleton_runner import MasterLeases, SingletonRunner, start_singletons
from .sweep import drop_closed

__all__ = ["WorkerRuntime", "run_worker"]

log = logging.getLogger("siocluster.worker")

_MAX_HANDOFF_HEAD = 256 * 1024


class WorkerRuntime:
    def __init__(self, msg: control.Configure, config: WorkerConfig, loaded: LoadedApp) -> None:
        self.msg = msg
        self.config = config
        self.loaded = loaded
        self.handshakes_total = 0
        self.messages_total = 0
        self.guards: Guards | None = None
        self.server: AppServer | None = None
        self.adapter: AdapterHandle | None = None
        self.stopping = asyncio.Event()
        self._stopped = False
        self._adopting: set[asyncio.Task[None]] = set()
        self._sessions_reported: dict[str, int] = {}
        self.client_errors: ClientErrorFilter | None = None
        self.singletons: SingletonRunner | None = None
        self.master_leases: MasterLeases | None = None
        self.recovery: RecoveryAgent | None = None
        self.outbound_overflows = 0
        self.admin_ui: ClusterAdmin | None = None

    # Wiring into python-engineio's public surface

    def _instrument(self, server: AppServer) -> None:
        eio = self.loaded.sio.eio
        slot, generation = self.msg.slot, self.msg.generation
        host = self.config.host_id
        eio.generate_id = lambda: mint_sid(slot, generation, host)
        original = driver_table(eio)["translate_request"]
        remote_of = server.remote_of
        # The ASGI driver's translate_request is a coroutine, aiohttp's is not.
        is_async = inspect.iscoroutinefunction(original)

        def translate_request(*args: Any) -> dict[str, Any]:
            environ: dict[str, Any] = original(*args)
            self._translated(environ, remote_of(args))
            return environ

        async def translate_asgi_request(*args: Any) -> dict[str, Any]:
            environ: dict[str, Any] = await original(*args)
            if environ:  # empty: the client went away before its request
                self._translated(environ, remote_of(args))
            return environ

        on_message = eio.handlers.get("message")
        if on_message is not None:

            async def counted(eio_sid: str, data: Any) -> Any:
                self.messages_total += 1
                return await on_message(eio_sid, data)

            eio.handlers["message"] = counted
        replace_driver_table(
            eio, translate_request=translate_asgi_request if is_async else translate_request
        )
        # One cap for polling bodies and WebSocket messages alike.
        if self.config.limits.max_message_bytes:
            eio.max_http_buffer_size = self.config.limits.max_message_bytes
        self.guards = install_guards(self.loaded.sio, self.config)
        install_outbound_queues(eio, self.config.limits.max_outbound_bytes, self._overflowed)

    def _overflowed(self, eio_sid: str) -> None:
        self.outbound_overflows += 1
        if self.outbound_overflows == 1 or self.outbound_overflows % 100 == 0:
            log.warning("closed session %s: more than %d bytes waiting to be sent to it "
                        "(%d so far; [limits] max_outbound_bytes)", eio_sid,
                        self.config.limits.max_outbound_bytes, self.outbound_overflows)

    def _translated(self, environ: dict[str, Any], remote: str | None) -> None:
        if "sid=" not in environ["QUERY_STRING"]:
            self.handshakes_total += 1
        if remote:
            environ["REMOTE_ADDR"] = remote

    async def start(self) -> None:
        config = self.config
        self.server = server = build_server(
            self.loaded,
            TrustedProxies(config.balancer.trusted_proxies),
            access_log=config.logging.access_log,
            max_message_bytes=config.limits.max_message_bytes,
        )
        self._instrument(server)
        self.adapter = await install_adapter(
            self.loaded.sio,
            self.config,
            slot=self.msg.slot,
            generation=self.msg.generation,
            runtime_dir=self.msg.runtime_dir,
        )
        if config.socketio_admin_ui:  # after the adapter: it wraps the manager's methods
            self.admin_ui = ClusterAdmin(self.loaded.sio, secret=config.socketio_admin_ui_secret,
                                         slot=self.msg.slot)
        await server.start()  # the app's own startup: a failure is a boot failure
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.msg.socket_path)
        await server.listen(self.msg.socket_path)

    def adopt_handoffs(self, channel: socket.socket) -> None:
        """Take client sockets the master passes (SCM_RIGHTS) into the app's server."""
        loop = asyncio.get_running_loop()
        server = self.server
        assert server is not None, "adopt_handoffs() after start()"

        def on_readable() -> None:
            while True:
                try:
                    head, fds, _flags, _addr = socket.recv_fds(channel, _MAX_HANDOFF_HEAD, 8)
                except BlockingIOError:
                    return
                except OSError:
                    loop.remove_reader(channel.fileno())
                    return
                if not fds and not head:
                    loop.remove_reader(channel.fileno())  # the master is gone
                    return
                # The head the master already read (empty: unread, it peeked) and
                # the client a PROXY header named (None: the socket's peer).
                read, peer = decode_handoff(head)
                for fd in fds:
                    sock = socket.socket(fileno=fd)
                    sock.setblocking(False)
                    task = loop.create_task(server.adopt(sock, read, peer))
                    self._adopting.add(task)
                    task.add_done_callback(self._adopting.discard)

        loop.add_reader(channel.fileno(), on_readable)

    def connections(self) -> int:
        sockets = self.loaded.sio.eio.sockets
        drop_closed(sockets)  # see worker/sweep.py: closed sessions would count for minutes
        return len(sockets)

    def ready_message(self) -> control.Ready:
        eio = self.loaded.sio.eio
        return control.Ready(
            pid=os.getpid(),
            engineio_path=self.loaded.engineio_path,
            ping_interval_s=float(eio.ping_interval),
            ping_timeout_s=float(eio.ping_timeout),
        )

    def heartbeat(self, lag: float) -> control.Heartbeat:
        return control.Heartbeat(
            connections=self.connections(),
            handshakes_total=self.handshakes_total,
            loop_lag_s=round(lag, 4),
            messages_total=self.messages_total,
            guards=self.guard_counters(),
            adapter=self.adapter.status() if self.adapter else {},
            sessions_by_ip=self.session_changes(),
            singletons=self.singletons.report() if self.singletons else {},
            emits=dict(getattr(self.adapter, "emits", {})),
            recovery=self.recovery.status() if self.recovery is not None else {},
            external_refused=dict(getattr(self.adapter, "refused", {})),
        )

    def guard_counters(self) -> dict[str, int]:
        counters = self.guards.status() if self.guards is not None else {}
        if self.client_errors is not None:
            counters["malformed_input"] = self.client_errors.count
        if self.outbound_overflows:
            counters["outbound_overflow"] = self.outbound_overflows
        return counters

    def session_changes(self) -> dict[str, int]:
        """Sessions per client address that changed since the last call (0: gone).

        Counted from python-socketio's per-session environ, whose REMOTE_ADDR is
        the client the master resolved; only when the master enforces a cap.
        """
        if not self.config.limits.max_sessions_per_ip:
            return {}
        environ: dict[str, dict[str, Any]] = self.loaded.sio.environ
        counts = Counter(str(env.get("REMOTE_ADDR", "")) for env in environ.values())
        last = self._sessions_reported
        changes = {a: n for a, n in counts.items() if last.get(a) != n}
        changes.update((a, 0) for a in last if a not in counts)
        self._sessions_reported = dict(counts)
        return changes

    async def stop(self, timeout_s: float, spread_s: float = 0.0) -> None:
        """Close sessions (clients reconnect elsewhere), stop the adapter, then the server.

        The server goes last: it stops accepting, closes what connections are
        left, then runs the app's own shutdown (aiohttp's on_shutdown and
        on_cleanup, the ASGI lifespan shutdown), after the drain.
        """
        if self._stopped:
            return
        self._stopped = True
        sio = self.loaded.sio
        # A close packet for a polling client waits for its next GET; a client
        # that vanished never sends one, so that step is bounded on its own.
        async def close_sessions() -> None:
            if spread_s > 0 and sio.eio.sockets:
                eio = sio.eio
                closed = await close_spread(eio.sockets, lambda s: close_session(eio, s),
                                            spread_s)
                log.info("drain: closed %d sessions over %.1fs", closed, spread_s)
            if sio.eio.sockets:  # python-engineio's disconnect() fails on none
                await sio.eio.disconnect()

        steps: list[tuple[str, Callable[[], Awaitable[Any]], float]] = []
        if self.singletons is not None:  # first: the successor starts while we drain
            singletons = self.singletons
            steps.append(("singletons", lambda: singletons.stop(min(timeout_s, 5.0)), timeout_s))
        if self.recovery is not None:  # before the close: they recover elsewhere
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.recovery.prepare_drain(), min(timeout_s, 5.0))
        steps += [
            ("close sessions", close_sessions, min(timeout_s, 3.0 + spread_s + UPGRADE_GRACE_S)),
            ("socketio shutdown", sio.shutdown, timeout_s),
        ]
        link = self.recovery.link if self.recovery is not None else None
        if link is not None:
            steps.append(("recovery store close", link.close, timeout_s))
        if self.admin_ui is not None:
            steps.append(("admin UI stats", self.admin_ui.close, 1.0))
        if self.adapter is not None:
            steps.append(("adapter close", self.adapter.close, timeout_s))
        server = self.server
        if server is not None:
            steps.append(("server close", lambda: server.close(timeout_s), timeout_s + 2.0))
        await _run_steps(steps)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.msg.socket_path)


async def _run_steps(steps: list[tuple[str, Callable[[], Awaitable[Any]], float]]) -> None:
    """Each stop step in turn, each bounded; one that fails or hangs does not stop the rest."""
    for name, step, limit in steps:
        started = time.monotonic()
        try:
            await asyncio.wait_for(step(), timeout=limit)
        except TimeoutError:
            log.warning("stop: %s did not finish in %.1fs", name, limit)
        except Exception as exc:
            log.warning("stop: %s failed: %r", name, exc)
        else:
            elapsed = time.monotonic() - started
            if elapsed > 0.5:
                log.info("stop: %s took %.1fs", name, elapsed)


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
    loop.add_signal_handler(signal.SIGTERM, runtime.stopping.set)
    writer.write(control.encode(runtime.ready_message()))
    await writer.drain()
    log.info("serving %s on %s", msg.app, msg.socket_path)
    started_singletons = start_singletons(
        loaded.sio, writer, backend_name=config.adapter.backend,
        redis_url=config.adapter.redis_url, channel=config.adapter.channel,
        lease_s=config.singleton_lease_s,
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
