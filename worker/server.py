"""One worker: the user's Socket.IO app on aiohttp + uvloop, on a private Unix socket.

Lifecycle, owned by :class:`WorkerRuntime`:

1. read :class:`~worker.control.Configure` from the control socket;
2. import the app; on failure send :class:`BootFailed` and exit with
   :data:`BOOT_FAILED_EXIT` so the master stops instead of respawning;
3. make Engine.IO mint routable sids, trust the master's X-Forwarded-* headers,
   install the cross-worker adapter and subscribe it, listen;
4. send :class:`Ready`, then a :class:`Heartbeat` from the event loop;
5. stop on :class:`Drain`, SIGTERM, or EOF on the control socket (the master is
   gone): close every Engine.IO session so clients reconnect elsewhere, then
   shut aiohttp down.  :meth:`WorkerRuntime.stop` is the one place that order
   is written.
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
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from balancer.forwarding import TrustedProxies, resolve_client
from balancer.handoff import decode_handoff
from balancer.peer import Peer, PeerProtocol
from balancer.sid import mint_sid
from supervisor.config import Config, config_from_dict

from . import control
from .adapter import AdapterHandle, install_adapter
from .app_loader import LoadedApp, load_app
from .emit import apply_emit
from .exceptions import AppLoadError
from .guards import Guards, install_guards
from .libcontract import check as check_library_contract
from .libcontract import driver_table, replace_driver_table
from .logfilter import ClientErrorFilter, install_client_error_filter, unify_library_logging
from .logs import configure_logging
from .singleton_runner import MasterLeases, SingletonRunner, start_singletons
from .sweep import drop_closed

__all__ = ["WorkerRuntime", "run_worker"]

log = logging.getLogger("siocluster.worker")

_MAX_HANDOFF_HEAD = 256 * 1024
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _forwarded_middleware(trusted: TrustedProxies) -> Any:
    """Give the app the client's address, whichever way the connection came.

    * Through the master's proxy (our Unix socket, which only the master can
      reach: its directory is 0700): the master resolved the client and wrote
      it as a single-entry X-Forwarded-For, so that is believed.
    * Handed off by the master (a TCP socket whose peer is the client itself,
      or shows the client a PROXY header named: see :mod:`balancer.peer`):
      the client's own X-Forwarded-* headers are believed only when the peer is
      one of ``[balancer] trusted_proxies``, exactly as the master would.  Such
      a connection is closed after any answer but a 101, so a client cannot
      keep it to bypass per-request routing.
    """

    @web.middleware
    async def forwarded(request: web.Request, handler: _Handler) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        handed_off = isinstance(peer, tuple)
        xff = request.headers.get("X-Forwarded-For")
        if not handed_off:
            if xff:
                proto = request.headers.get("X-Forwarded-Proto", "http")
                request = request.clone(remote=xff, scheme=proto)
            return await handler(request)
        client = str(peer[0])  # type: ignore[index]
        if client in trusted:
            resolved = resolve_client(client, xff, trusted)
            proto = request.headers.get("X-Forwarded-Proto", "http")
            request = request.clone(remote=resolved, scheme=proto)
        response = await handler(request)
        if response.status != 101:
            response.force_close()
        return response

    return forwarded


class WorkerRuntime:
    def __init__(self, msg: control.Configure, config: Config, loaded: LoadedApp) -> None:
        self.msg = msg
        self.config = config
        self.loaded = loaded
        self.handshakes_total = 0
        self.messages_total = 0
        self.guards: Guards | None = None
        self.runner: web.AppRunner | None = None
        self.adapter: AdapterHandle | None = None
        self.stopping = asyncio.Event()
        self._stopped = False
        self._adopting: set[asyncio.Task[None]] = set()
        self._sessions_reported: dict[str, int] = {}
        self.client_errors: ClientErrorFilter | None = None
        self.singletons: SingletonRunner | None = None
        self.master_leases: MasterLeases | None = None

    # Wiring into python-engineio's public surface

    def _instrument(self) -> None:
        eio = self.loaded.sio.eio
        slot, generation = self.msg.slot, self.msg.generation
        eio.generate_id = lambda: mint_sid(slot, generation)
        original = driver_table(eio)["translate_request"]

        def translate_request(request: web.Request) -> dict[str, Any]:
            environ: dict[str, Any] = original(request)
            if "sid=" not in environ["QUERY_STRING"]:
                self.handshakes_total += 1
            if request.remote:
                environ["REMOTE_ADDR"] = request.remote
            return environ

        on_message = eio.handlers.get("message")
        if on_message is not None:

            async def counted(eio_sid: str, data: Any) -> Any:
                self.messages_total += 1
                return await on_message(eio_sid, data)

            eio.handlers["message"] = counted
        replace_driver_table(eio, translate_request=translate_request)
        # One cap for polling bodies and WebSocket messages alike.
        if self.config.limits.max_message_bytes:
            eio.max_http_buffer_size = self.config.limits.max_message_bytes
        self.guards = install_guards(self.loaded.sio, self.config)
        trusted = TrustedProxies(self.config.balancer.trusted_proxies)
        self.loaded.app.middlewares.insert(0, _forwarded_middleware(trusted))

    async def start(self) -> None:
        self._instrument()
        self.adapter = await install_adapter(
            self.loaded.sio,
            self.config,
            slot=self.msg.slot,
            generation=self.msg.generation,
            runtime_dir=self.msg.runtime_dir,
        )
        self.runner = web.AppRunner(
            self.loaded.app,
            handle_signals=False,
            access_log=log if self.config.logging.access_log else None,
            # By the time aiohttp shuts down every session was closed; what is left
            # are long-polls python-engineio never wakes after a client's close.
            shutdown_timeout=1.0,
        )
        await self.runner.setup()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.msg.socket_path)
        site = web.UnixSite(self.runner, self.msg.socket_path)
        await site.start()

    def adopt_handoffs(self, channel: socket.socket) -> None:
        """Take client sockets the master passes (SCM_RIGHTS) into our aiohttp server."""
        loop = asyncio.get_running_loop()
        assert self.runner is not None and self.runner.server is not None
        server = self.runner.server

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
                    task = loop.create_task(self._adopt(server, sock, read, peer))
                    self._adopting.add(task)
                    task.add_done_callback(self._adopting.discard)

        loop.add_reader(channel.fileno(), on_readable)

    async def _adopt(
        self, server: Any, sock: socket.socket, head: bytes, peer: Peer | None
    ) -> None:
        factory = server if peer is None else (lambda: PeerProtocol(server(), peer))
        try:
            _transport, protocol = await asyncio.get_running_loop().connect_accepted_socket(
                factory, sock
            )
        except OSError:
            sock.close()
            return
        if head:
            protocol.data_received(head)

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
            external_refused=dict(getattr(self.adapter, "refused", {})),
        )

    def guard_counters(self) -> dict[str, int]:
        counters = self.guards.status() if self.guards is not None else {}
        if self.client_errors is not None:
            counters["malformed_input"] = self.client_errors.count
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

    async def stop(self, timeout_s: float) -> None:
        """Close sessions (clients reconnect elsewhere), stop the adapter, then aiohttp."""
        if self._stopped:
            return
        self._stopped = True
        sio = self.loaded.sio
        # A close packet for a polling client waits for its next GET; a client
        # that vanished never sends one, so that step is bounded on its own.
        async def close_sessions() -> None:
            if sio.eio.sockets:  # python-engineio's disconnect() fails on none
                await sio.eio.disconnect()

        steps: list[tuple[str, Callable[[], Awaitable[Any]], float]] = []
        if self.singletons is not None:  # first: the successor starts while we drain
            singletons = self.singletons
            steps.append(("singletons", lambda: singletons.stop(min(timeout_s, 5.0)), timeout_s))
        steps += [
            ("close sessions", close_sessions, min(timeout_s, 3.0)),
            ("socketio shutdown", sio.shutdown, timeout_s),
        ]
        if self.adapter is not None:
            steps.append(("adapter close", self.adapter.close, timeout_s))
        if self.runner is not None:
            steps.append(("aiohttp cleanup", self.runner.cleanup, timeout_s))
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
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.msg.socket_path)


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


async def run_worker(control_fd: int, handoff_fd: int | None = None) -> int:
    sock = socket.socket(fileno=control_fd)
    sock.setblocking(False)
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    messages = control.MessageReader(reader)
    msg = await messages.next()
    if not isinstance(msg, control.Configure):
        return 1
    config = config_from_dict(msg.config, "control channel")
    configure_logging(config.logging.level, config.logging.format, role="worker", slot=msg.slot)
    loop = asyncio.get_running_loop()

    client_errors = install_client_error_filter()
    try:
        loaded = await load_app(msg.app)
        if problems := check_library_contract(loaded.sio):
            raise AppLoadError(
                "siocluster was not built for the installed python-socketio/python-engineio "
                f"({'; '.join(problems)}); install the versions pinned in its pyproject")
    except AppLoadError as exc:
        tb = "".join(traceback.format_exception(exc.__cause__ or exc))
        writer.write(control.encode(control.BootFailed(error=str(exc), traceback=tb)))
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        return control.BOOT_FAILED_EXIT

    unify_library_logging()  # the app's server attached engineio's own handler
    runtime = WorkerRuntime(msg, config, loaded)
    runtime.client_errors = client_errors
    try:
        await runtime.start()
    except Exception as exc:
        tb = traceback.format_exc()
        error = f"worker {msg.slot} could not start app {msg.app!r}: {type(exc).__name__}: {exc}"
        writer.write(control.encode(control.BootFailed(error=error, traceback=tb)))
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        return control.BOOT_FAILED_EXIT

    if handoff_fd is not None:
        channel = socket.socket(fileno=handoff_fd)
        channel.setblocking(False)
        runtime.adopt_handoffs(channel)
    drain_timeout = config.cluster.graceful_timeout_s
    loop.add_signal_handler(signal.SIGTERM, runtime.stopping.set)
    writer.write(control.encode(runtime.ready_message()))
    await writer.drain()
    log.info("serving %s on %s", msg.app, msg.socket_path)
    started_singletons = start_singletons(
        loaded.sio, writer, backend_name=config.adapter.backend,
        redis_url=config.adapter.redis_url, channel=config.adapter.channel,
        lease_s=config.cluster.singleton_lease_s,
        heartbeat_s=config.health.heartbeat_interval_s, slot=msg.slot, generation=msg.generation,
    )
    if started_singletons is not None:
        runtime.singletons, runtime.master_leases = started_singletons

    emits: set[asyncio.Task[None]] = set()

    async def read_control() -> None:
        nonlocal drain_timeout
        while True:
            incoming = await messages.next()
            if incoming is None:
                log.warning("master is gone; stopping")
                drain_timeout = 1.0
                return
            if isinstance(incoming, control.Drain):
                drain_timeout = incoming.timeout_s
                return
            if isinstance(incoming, control.LeaseReply) and runtime.master_leases is not None:
                runtime.master_leases.on_reply(incoming)
            if isinstance(incoming, control.Emit):
                task = asyncio.create_task(apply_emit(loaded.sio, incoming, writer))
                emits.add(task)
                task.add_done_callback(emits.discard)

    tasks = [
        asyncio.create_task(read_control()),
        asyncio.create_task(_heartbeats(runtime, writer, config.health.heartbeat_interval_s)),
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
    await runtime.stop(drain_timeout)
    log.info("stopped after %.2fs", time.monotonic() - started)
    writer.close()
    return 0
