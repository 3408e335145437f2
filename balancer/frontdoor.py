"""The public listener's accept loop: peek, then hand off or serve.

Every accepted connection is peeked at (``MSG_PEEK``: nothing is consumed)
until its first request head is complete, for at most
``[limits] header_timeout_s`` (a client trickling its head is answered 408
and closed: slowloris costs us one small task, not a worker).

* A WebSocket upgrade, in ``websocket = "handoff"`` mode, is routed by its sid
  (or, without one, to the least-loaded worker) and its file descriptor is
  passed to that worker over the worker's handoff socket (``SCM_RIGHTS``).
  The worker adopts it into its own aiohttp server and reads the untouched
  head itself; from then on the master does no work for that connection.
* Everything else (polling, the app's routes, upgrades with a stale sid, and
  every upgrade in ``"tunnel"`` mode) is given to the in-process aiohttp
  server, which routes each request on its own (:mod:`balancer.proxy`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Any

from supervisor.config import BalancerConfig, LimitsConfig

from .directory import WorkerDirectory
from .headguard import RESPONSE_408, GuardedProtocol
from .peek import NeedMore, Plain, Upgrade, classify_head
from .proxy import BalancerStats
from .routing import Forward, route

__all__ = ["FrontDoor"]

log = logging.getLogger("siocluster.balancer")

async def _readable(conn: socket.socket, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not waiter.done():
            waiter.set_result(None)

    loop.add_reader(conn.fileno(), wake)
    try:
        await asyncio.wait_for(waiter, timeout)
    except TimeoutError:
        pass
    finally:
        loop.remove_reader(conn.fileno())


async def _refuse(conn: socket.socket, response: bytes) -> None:
    """Answer and close without a reset: closing with unread bytes would send RST,
    which can destroy the answer before the client reads it."""
    loop = asyncio.get_running_loop()
    with contextlib.suppress(OSError):
        while conn.recv(65536):
            pass
    with contextlib.suppress(OSError):
        conn.send(response)
        conn.shutdown(socket.SHUT_WR)
        deadline = loop.time() + 1.0
        while loop.time() < deadline:
            try:
                if not conn.recv(65536):
                    break
            except BlockingIOError:
                await _readable(conn, deadline - loop.time())


class FrontDoor:
    def __init__(
        self,
        config: BalancerConfig,
        limits: LimitsConfig,
        directory: WorkerDirectory,
        stats: BalancerStats,
        serve: Callable[[], Any],
    ) -> None:
        self.config = config
        self.limits = limits
        self.directory = directory
        self.stats = stats
        self._serve = serve  # aiohttp's protocol factory (web.Server)
        self._listener: socket.socket | None = None
        self._accept_task: asyncio.Task[None] | None = None
        self._triage: set[asyncio.Task[None]] = set()

    def bind(self) -> None:
        infos = socket.getaddrinfo(
            self.config.host, self.config.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(4096)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self._listener = sock

    def start(self) -> None:
        self._accept_task = asyncio.get_running_loop().create_task(self._accept_loop())

    async def stop(self) -> None:
        """Stop accepting; connections already served are left to their owners."""
        if self._accept_task is not None:
            self._accept_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accept_task
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for task in list(self._triage):
            task.cancel()

    def _protocol(self) -> Any:
        """aiohttp's protocol, with every later head timed too (the first one was)."""
        timeout = self.limits.header_timeout_s
        if not timeout:
            return self._serve()
        return GuardedProtocol(self._serve(), timeout, self._count_head_timeout)

    def _count_head_timeout(self) -> None:
        self.stats.head_timeouts += 1

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._listener is not None
        while True:
            try:
                conn, _ = await loop.sock_accept(self._listener)
            except OSError as exc:
                # EMFILE and friends: back off instead of spinning; keep serving.
                log.error("accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = loop.create_task(self._handle(conn))
            self._triage.add(task)
            task.add_done_callback(self._triage.discard)

    async def _peek(self, conn: socket.socket) -> Plain | Upgrade | None:
        """The verdict on the first head, or None when the client went away or stalled."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.limits.header_timeout_s or 3600.0)
        limit = self.limits.max_header_bytes
        while True:
            try:
                data = conn.recv(limit, socket.MSG_PEEK)
            except BlockingIOError:
                data = None
            except OSError:
                return None
            if data == b"":
                return None
            if data is not None:
                verdict = classify_head(data, complete=len(data) >= limit)
                if not isinstance(verdict, NeedMore):
                    return verdict
            remaining = deadline - loop.time()
            if remaining <= 0:
                self.stats.head_timeouts += 1
                await _refuse(conn, RESPONSE_408)
                return None
            if data is None:
                await _readable(conn, remaining)
            else:
                # Peeking leaves the bytes in place, so the socket stays readable:
                # wait a little for the rest of the head instead of spinning.
                await asyncio.sleep(min(0.005, remaining))

    async def _handle(self, conn: socket.socket) -> None:
        verdict = await self._peek(conn)
        if verdict is None:
            conn.close()
            return
        if (
            isinstance(verdict, Upgrade)
            and self.config.websocket == "handoff"
            and self._hand_off(conn, verdict)
        ):
            return
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(self._protocol, conn)
        except OSError:
            conn.close()

    def _hand_off(self, conn: socket.socket, upgrade: Upgrade) -> bool:
        if upgrade.sid is None and (
            self.limits.handshake_rate_per_ip or self.limits.max_sessions_per_ip
        ):
            # New sessions are limited by the proxy, which sees every header
            # (X-Forwarded-For from trusted proxies); it hands the connection off after.
            return False
        decision = route(upgrade.sid, self.directory.views())
        if not isinstance(decision, Forward):
            return False  # aiohttp answers the 400/503 with the proper body
        channel = self.directory.handoff_channel(decision.slot, decision.generation)
        if channel is None:
            return False
        try:
            socket.send_fds(channel, [b"h"], [conn.fileno()])
        except OSError:
            # The worker's queue is full or it just died: serve it through the tunnel.
            self.stats.handoff_failures += 1
            return False
        if decision.new_session and upgrade.path == self.directory.engineio_path:
            self.directory.note_handshake(decision.slot, decision.generation)
            self.stats.handshakes += 1
        self.stats.requests += 1
        self.stats.upgrades += 1
        self.stats.handoffs += 1
        conn.close()  # the worker holds its own copy now
        return True
