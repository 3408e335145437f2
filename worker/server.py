"""One worker's runtime: the user's Socket.IO app on a private Unix socket.

The app is served by an :class:`~worker.serving.AppServer`: aiohttp for
aiohttp apps, uvicorn's protocols for ASGI apps; the runtime below does not
know which.

:class:`WorkerRuntime` owns the lifecycle of a booted app (the process around
it, from the control socket to the exit, is :mod:`worker.main`):

1. :meth:`WorkerRuntime.start`: make Engine.IO mint routable sids, trust the
   master's X-Forwarded-* headers, install the cross-worker adapter and
   subscribe it, run the app's own startup (aiohttp's on_startup, the ASGI
   lifespan), listen;
2. :meth:`WorkerRuntime.adopt_handoffs`: take the client sockets the master
   hands over;
3. :meth:`WorkerRuntime.ready_message` and :meth:`WorkerRuntime.heartbeat`:
   what the master hears of it;
4. :meth:`WorkerRuntime.stop`, the one place the stop order is written: close
   every Engine.IO session so clients reconnect elsewhere, then close the
   server, whose last step is the app's own shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from balancer.forwarding import TrustedProxies
from balancer.handoff import POLLING, decode_handoff, decode_passed
from balancer.sid import SidOwner, mint_sid

from . import control
from .adapter import AdapterHandle, install_adapter
from .admin_ui import ClusterAdmin
from .app_loader import LoadedApp
from .config import WorkerConfig
from .drain import UPGRADE_GRACE_S, close_session, close_spread
from .gate import GateDesk
from .guards import Guards, install_guards
from .libcontract import driver_table, replace_driver_table
from .logfilter import ClientErrorFilter
from .outbound import install_outbound_queues
from .recovery.agent import RecoveryAgent
from .serving import AppServer, build_server
from .singleton_runner import MasterLeases, SingletonRunner
from .sweep import drop_closed

__all__ = ["WorkerRuntime"]

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
        self.gates: GateDesk | None = None  # polling connections the master passed

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
        gates = self.gates = GateDesk(
            self.config.limits,
            SidOwner(self.msg.slot, self.msg.generation, self.config.host_id),
            self.loaded.engineio_path, TrustedProxies(self.config.balancer.trusted_proxies),
            server.protocol, channel,
            upgrades_here=self.config.balancer.websocket == "handoff")

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
                passed = decode_passed(head)
                for fd in fds:
                    sock = socket.socket(fileno=fd)
                    sock.setblocking(False)
                    if passed is not None and passed.kind == POLLING:
                        # A kept-alive polling connection, for the gate (worker/gate.py).
                        adopting = gates.adopt(sock, passed.data, passed.peer, passed.returns,
                                               passed.admitted)
                    else:
                        # The head the master already read (empty: unread, it peeked)
                        # and the client a PROXY header named (None: the socket's peer).
                        read, peer = decode_handoff(head)
                        adopting = server.adopt(sock, read, peer)
                    task = loop.create_task(adopting)
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
        adapter = self.adapter.status() if self.adapter else None
        figures = adapter.figures if adapter is not None else None
        return control.Heartbeat(
            connections=self.connections(),
            handshakes_total=self.handshakes_total,
            loop_lag_s=round(lag, 4),
            messages_total=self.messages_total,
            guards=self.guard_counters(),
            adapter=adapter,
            sessions_by_ip=self.session_changes(),
            singletons=self.singletons.report() if self.singletons else {},
            emits=figures.emits if figures is not None else {},
            recovery=self.recovery.status() if self.recovery is not None else {},
            external_refused=figures.external_refused if figures is not None else {},
            gate=self.gates.figures() if self.gates is not None else {},
            gate_latency={
                kind: control.LatencyReport(counts, total_s)
                for kind, (counts, total_s) in self.gates.latency_figures().items()
            } if self.gates is not None else {},
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
        if self.gates is not None:  # kept-alive polling connections go back to the master
            self.gates.release_all()
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
