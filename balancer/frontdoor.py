"""The public listener: accept, peek, then hand off or serve.

The listener is accepted from in the event loop's reader callback (one epoll
registration for its life, up to 64 connections per wake-up; after an accept
error such as EMFILE it rests 0.1 s, then accepts again).  Every accepted
connection is peeked at (``MSG_PEEK``: nothing is consumed) until its first
request head is complete, for at most ``[limits] header_timeout_s`` (a client
trickling its head is answered 408 and closed: slowloris costs us one small
task, not a worker).  A head that is all there when the connection is accepted
is judged at once, and a WebSocket upgrade then handed off without a task.

* A WebSocket upgrade, in ``websocket = "handoff"`` mode, is routed by its sid
  (or, without one, to the least-loaded worker) and its file descriptor is
  passed to that worker over the worker's handoff socket (``SCM_RIGHTS``).
  The worker adopts it into its own aiohttp server and reads the untouched
  head itself; from then on the master does no work for that connection.
* A polling handshake on a fresh HTTP/1.1 keep-alive connection (a plain GET
  of the Engine.IO path, no sid: :class:`balancer.peek.Handshake`) is passed
  the same way, unread, to the least-loaded worker's polling gate, which serves
  its sessions' requests from then on (:mod:`balancer.stickiness`).  Not when
  per-address limits need the master to see the request first.
* Everything else (polling, the app's routes, upgrades with a stale sid, and
  every upgrade in ``"tunnel"`` mode) is served in process, each request
  routed on its own: by :class:`balancer.front.FrontProtocol` (httptools), or
  with ``[balancer] http = "aiohttp"`` by aiohttp's server
  (:mod:`balancer.proxy`), which the former also falls back to for the few
  requests it does not serve itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import Callable
from typing import Any, TypeVar

from .config import BalancerConfig, LimitsConfig
from .directory import WorkerDirectory
from .forwarding import TrustedProxies
from .front import FrontProtocol
from .handoff import POLLING, encode_handoff, encode_passed
from .headguard import RESPONSE_408, GuardedProtocol
from .peek import Handshake, NeedMore, Plain, Upgrade, classify_head
from .peer import Peer, PeerProtocol
from .proxy import Balancer
from .proxyproto import (
    MAX_V1_BYTES,
    MAX_V2_BYTES,
    InvalidProxyHeader,
    ProxyHeader,
    parse_proxy_header,
)
from .routing import Forward, route
from .sockopts import keepalive_options
from .stats import BalancerStats

__all__ = ["FrontDoor"]

_V = TypeVar("_V")

log = logging.getLogger("siocluster.balancer")

# Connections accepted per wake-up of the listener, at most.
_ACCEPT_BATCH = 64
# After accept() fails (EMFILE...), how long the listener rests, and how often
# the failure is logged while it lasts.
_ACCEPT_BACKOFF_S = 0.1
_ACCEPT_ERROR_LOG_S = 10.0

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
        balancer: Balancer | None = None,
    ) -> None:
        self.config = config
        self.limits = limits
        self.directory = directory
        self.stats = stats
        self._serve = serve  # aiohttp's protocol factory (web.Server)
        self._balancer = balancer  # None: aiohttp serves every connection
        self._listener: socket.socket | None = None
        self._accepting = False
        self._resume: asyncio.TimerHandle | None = None  # accepting again after an error
        self._accept_error_logged = -_ACCEPT_ERROR_LOG_S
        self._triage: set[asyncio.Task[None]] = set()
        self._trusted = TrustedProxies(config.trusted_proxies)
        self.port = config.port
        if balancer is not None:  # it serves the polling connections workers give back
            balancer.returns.protocol = self._protocol

    def bind(self) -> None:
        infos = socket.getaddrinfo(
            self.config.host, self.config.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # Woken only once a client has sent something (nginx's "deferred"):
            # the first head is then nearly always whole at accept, so it is
            # judged and passed on without a task (see _accepted).  A client
            # that sends nothing is accepted after this second all the same.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 1)
            # Linux gives every accepted socket the listener's TCP options: set
            # once here, not with several system calls per connection.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for level, option, value in keepalive_options(self.limits.tcp_keepalive_s):
                sock.setsockopt(level, option, value)
            sock.bind(address)
            sock.listen(4096)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self._listener = sock
        self.port = int(sock.getsockname()[1])  # the one bound, when the config says 0

    def start(self) -> None:
        """Accept from the event loop's reader callback: one epoll registration for
        the listener's life, every pending connection taken per wake-up."""
        assert self._listener is not None
        asyncio.get_running_loop().add_reader(self._listener.fileno(), self._accept_ready)
        self._accepting = True

    async def stop(self) -> None:
        """Stop accepting; connections already served are left to their owners."""
        self._pause_accepting()
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for task in list(self._triage):
            task.cancel()

    def _protocol(self, peer: Peer | None, returns: int = 0) -> Any:
        """The protocol that serves a connection from its first request on."""
        if self._balancer is not None and self.config.http == "httptools":
            return FrontProtocol(self._balancer, peer, lambda: self._aiohttp_protocol(peer),
                                 returns)
        return self._aiohttp_protocol(peer)

    def _aiohttp_protocol(self, peer: Peer | None) -> Any:
        """aiohttp's protocol, with every later head timed too (the first one was)
        and half-closes answered, and the client a PROXY header named as its peer."""
        protocol: Any = GuardedProtocol(
            self._serve(), self.limits.header_timeout_s, self._count_head_timeout
        )
        if peer is not None:
            protocol = PeerProtocol(protocol, peer)
        return protocol

    def _count_head_timeout(self) -> None:
        self.stats.head_timeouts += 1

    def _pause_accepting(self) -> None:
        if self._accepting and self._listener is not None:
            asyncio.get_running_loop().remove_reader(self._listener.fileno())
        self._accepting = False

    def _resume_accepting(self) -> None:
        self._resume = None
        if self._listener is not None and not self._accepting:
            asyncio.get_running_loop().add_reader(self._listener.fileno(), self._accept_ready)
            self._accepting = True

    def _accept_ready(self) -> None:
        listener = self._listener
        if listener is None:
            return
        for _ in range(_ACCEPT_BATCH):  # then let the loop serve the rest of its events
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # EMFILE and friends: back off instead of spinning; keep serving.
                now = time.monotonic()
                if now - self._accept_error_logged > _ACCEPT_ERROR_LOG_S:
                    self._accept_error_logged = now
                    log.error("accept failed: %s; accepting again in %gs (logged at most "
                              "every %gs)", exc, _ACCEPT_BACKOFF_S, _ACCEPT_ERROR_LOG_S)
                self._pause_accepting()
                self._resume = asyncio.get_running_loop().call_later(
                    _ACCEPT_BACKOFF_S, self._resume_accepting)
                return
            self._accepted(conn)

    def _accepted(self, conn: socket.socket) -> None:
        conn.setblocking(False)  # (TCP_NODELAY and keepalive: the listener's, see bind)
        verdict = None if self.config.proxy_protocol else self._peek_now(conn)
        if self._passed(conn, verdict, None):
            return  # the common cases of a connect storm: no task at all
        task = asyncio.get_running_loop().create_task(self._handle(conn, verdict))
        self._triage.add(task)
        task.add_done_callback(self._triage.discard)

    def _passed(self, conn: socket.socket, verdict: Plain | Upgrade | Handshake | None,
                peer: Peer | None) -> bool:
        """Whether the connection went to a worker on its first head, unread."""
        if isinstance(verdict, Upgrade):
            return self.config.websocket == "handoff" and self._hand_off(conn, verdict, peer)
        return isinstance(verdict, Handshake) and self._pass_handshake(conn, peer)

    def _handshake_path(self) -> bytes:
        """The path of a handshake the front door passes on unread (empty: none is)."""
        b = self._balancer
        if (b is None or self.config.http != "httptools" or not self.config.polling_handoff
                or self.limits.handshake_rate_per_ip or self.limits.max_sessions_per_ip):
            # aiohttp's side never passes polling; the limits need the whole request
            return b""
        return b.engineio_path_bytes()

    def _peek_now(self, conn: socket.socket) -> Plain | Upgrade | Handshake | None:
        """The verdict on the first head if it is all here already, else None."""
        limit = self.limits.max_header_bytes
        try:
            data = conn.recv(limit, socket.MSG_PEEK)
        except OSError:
            return None
        if not data:
            return None
        verdict = classify_head(data, complete=len(data) >= limit,
                                handshake_path=self._handshake_path())
        return None if isinstance(verdict, NeedMore) else verdict

    async def _peek_for(
        self,
        conn: socket.socket,
        deadline: float,
        judge: Callable[[bytes], _V | NeedMore],
        size: int,
        max_size: int,
    ) -> _V | None:
        """Peek (consuming nothing) until ``judge`` has a verdict on the bytes so far.

        None when the client went away, or stalled past ``deadline`` (then it was
        answered 408).  ``size`` grows to ``max_size`` when a peek fills it.
        """
        loop = asyncio.get_running_loop()
        while True:
            try:
                data = conn.recv(size, socket.MSG_PEEK)
            except BlockingIOError:
                data = None
            except OSError:
                return None
            if data == b"":
                return None
            if data is not None:
                verdict = judge(data)
                if not isinstance(verdict, NeedMore):
                    return verdict
                if len(data) >= size:
                    size = max_size
            remaining = deadline - loop.time()
            if remaining <= 0:
                self.stats.head_timeouts += 1
                await _refuse(conn, RESPONSE_408)
                return None
            if data is None:
                await _readable(conn, remaining)
            else:
                # Peeking leaves the bytes in place, so the socket stays readable:
                # wait a little for the rest instead of spinning.
                await asyncio.sleep(min(0.005, remaining))

    async def _proxy_header(self, conn: socket.socket, deadline: float) -> Peer | bool | None:
        """Read the PROXY header off the socket: the client it names, None to keep
        the TCP peer (LOCAL/UNKNOWN), or False when the connection is done with."""
        if self._trusted:
            try:
                tcp_peer = str(conn.getpeername()[0])
            except OSError:
                return False
            if tcp_peer not in self._trusted:
                return await self._refuse_proxy(conn, "proxy protocol header from an "
                                                "address not in trusted_proxies")
        # Most headers fit the first peek; a v2 one with TLVs may need the largest.
        verdict: ProxyHeader | InvalidProxyHeader | None = await self._peek_for(
            conn, deadline, parse_proxy_header, MAX_V1_BYTES + 16, MAX_V2_BYTES
        )
        if verdict is None:
            return False
        if isinstance(verdict, InvalidProxyHeader):
            return await self._refuse_proxy(conn, verdict.reason)
        try:
            consumed = conn.recv(verdict.length)
        except OSError:
            return False
        if len(consumed) != verdict.length:  # the peeked bytes are there to take
            return False
        return verdict.source

    async def _refuse_proxy(self, conn: socket.socket, reason: str) -> bool:
        self.stats.proxy_protocol_errors += 1
        log.debug("connection refused: %s", reason)
        body = json.dumps({"code": 400, "message": reason}).encode()
        await _refuse(conn, b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
                      + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                      + body)
        return False

    async def _peek(self, conn: socket.socket,
                    deadline: float) -> Plain | Upgrade | Handshake | None:
        """The verdict on the first head, or None when the client went away or stalled."""
        limit = self.limits.max_header_bytes
        path = self._handshake_path()
        return await self._peek_for(
            conn, deadline,
            lambda data: classify_head(data, complete=len(data) >= limit, handshake_path=path),
            limit, limit,
        )

    async def _handle(self, conn: socket.socket,
                      verdict: Plain | Upgrade | Handshake | None = None) -> None:
        """Serve a connection; ``verdict``: its first head was judged (and, for an
        upgrade, not handed off) when it was accepted."""
        loop = asyncio.get_running_loop()
        peer: Peer | None = None
        if verdict is None:
            # One deadline for the PROXY header and the first request head together.
            deadline = loop.time() + (self.limits.header_timeout_s or 3600.0)
            if self.config.proxy_protocol:
                named = await self._proxy_header(conn, deadline)
                if named is False:
                    conn.close()
                    return
                peer = named if isinstance(named, tuple) else None
            verdict = await self._peek(conn, deadline)
            if verdict is None:
                conn.close()
                return
            if self._passed(conn, verdict, peer):
                return
        try:
            await loop.connect_accepted_socket(lambda: self._protocol(peer), conn)
        except OSError:
            conn.close()

    def _hand_off(self, conn: socket.socket, upgrade: Upgrade, peer: Peer | None) -> bool:
        if upgrade.sid is None and (
            self.limits.handshake_rate_per_ip or self.limits.max_sessions_per_ip
        ):
            # New sessions are limited by the proxy, which sees every header
            # (X-Forwarded-For from trusted proxies); it hands the connection off after.
            return False
        if upgrade.forwarded:
            return False  # the proxy checks the claim first, then hands it off
        decision = route(upgrade.sid, self.directory.views(), self.directory.host_id)
        if not isinstance(decision, Forward):
            # aiohttp answers the 400/503 with the proper body, or forwards the
            # upgrade to the host that owns the sid
            return False
        if not self._send(conn, decision, encode_handoff(b"", peer)):
            return False  # served through the tunnel instead
        if decision.new_session and upgrade.path == self.directory.engineio_path:
            self.directory.note_handshake(decision.slot, decision.generation)
            self.stats.handshakes += 1
        self.stats.requests += 1
        self.stats.upgrades += 1
        self.stats.handoffs += 1
        return True

    def _pass_handshake(self, conn: socket.socket, peer: Peer | None) -> bool:
        """A new polling session: its connection, with the handshake unread, to the
        worker that will own it, as :class:`FrontProtocol` would pass it once parsed."""
        decision = route(None, self.directory.views(), self.directory.host_id)
        if not isinstance(decision, Forward):
            return False  # FrontProtocol answers the 503
        if not self._send(conn, decision, encode_passed(POLLING, b"", peer, 0, admitted=True)):
            return False  # parsed and relayed instead
        self.directory.note_handshake(decision.slot, decision.generation)
        self.stats.requests += 1
        self.stats.handshakes += 1
        self.stats.polling_handoffs += 1
        return True

    def _send(self, conn: socket.socket, decision: Forward, payload: bytes) -> bool:
        """Pass ``conn`` to the worker ``decision`` names, with ``payload``
        (:mod:`balancer.handoff`); ours is closed once the worker holds its copy."""
        channel = self.directory.handoff_channel(decision.slot, decision.generation)
        if channel is None:
            return False
        try:
            socket.send_fds(channel, [payload], [conn.fileno()])
        except OSError:  # the worker's queue is full or it just died
            self.stats.handoff_failures += 1
            return False
        conn.close()
        return True
