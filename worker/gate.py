"""A worker's gate: the polling requests of its own sessions, without the master.

The master passes a kept-alive polling connection to the worker that owns its
sessions (:mod:`balancer.stickiness`), with the request it read off it.  The
worker serves it with a :class:`PollingGate`: the master's own HTTP/1.1
connection class (:class:`balancer.httpconn.HttpConnection`), so its limits,
timers, pipelining order and half-close rules all still apply.  Each request:

* a GET or POST with one of this worker's sids goes to the app's own HTTP
  protocol (aiohttp's or uvicorn's: :meth:`~worker.serving.AppServer.protocol`)
  as the master would have relayed it, framed by Content-Length, with the
  client in X-Forwarded-For.  That protocol writes through an
  :class:`InnerTransport` straight to the client; httptools' response parser
  tells the gate where the answer ends;
* an upgrade of one of its sessions gives the socket itself to the app's
  protocol, as a WebSocket the master hands off;
* anything else (another worker's sid, a handshake, which the master admits,
  the app's own routes, a request that claims to be forwarded by another host,
  whose claim the master verifies) sends the connection back to the master with the
  requests not yet answered, once the answers before are written
  (:meth:`GateDesk.give_back`).  A return that fails is answered 503, closed
  and counted.  The master may pass a connection with a handshake it has
  just admitted: that first request is served here.

When the worker stops, each gate gives its connection back after the answer
in progress, so a client's kept-alive connection outlives a rolling reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httptools

from balancer.config import LimitsConfig
from balancer.forwarding import TrustedProxies, resolve_client
from balancer.handoff import RETURNED, encode_passed
from balancer.httpconn import HttpConnection
from balancer.httpmsg import Request, json_error
from balancer.peer import Peer
from balancer.sid import SidOwner
from balancer.stats import Latency
from balancer.stickiness import serves_here

from .gate_transport import InnerTransport, ResponseEnd

__all__ = ["GateDesk", "GateStats", "PollingGate"]

log = logging.getLogger("siocluster.worker")

# No X-Forwarded-Proto: the gate's requests are Engine.IO's own, always plain
# http, and python-engineio's default CORS origins do more work with one.
# A request that is not ours with a body over this goes back as soon as its head
# is read (a datagram carries what was read; the rest stays in the socket).
_RETURN_EARLY_OVER = 64 * 1024
# Waiting for an answer to be written before a return: every this many seconds,
# at most _FLUSH_TRIES times.
_FLUSH_POLL_S = 0.005
_FLUSH_TRIES = 2000
# The handoff socket's send buffer (the kernel caps it at net.core.wmem_max).
_SNDBUF = 1024 * 1024


@dataclass(slots=True)
class GateStats:
    requests: int = 0  # served here
    upgrades: int = 0  # WebSocket upgrades given to the app's protocol here
    returns: int = 0  # connections given back to the master
    return_failures: int = 0  # ... that could not be (answered 503)
    too_large: int = 0
    head_timeouts: int = 0
    body_timeouts: int = 0


class GateDesk:
    """What every gate of this worker shares."""

    def __init__(self, limits: LimitsConfig, me: SidOwner, engineio_path: str,
                 trusted: TrustedProxies, inner: Callable[[Peer | None], asyncio.Protocol],
                 channel: socket.socket, *, upgrades_here: bool = True) -> None:
        """``upgrades_here``: an upgrade of ours is served here (``[balancer]
        websocket = "handoff"``); else it goes back, for the master's tunnel."""
        self.limits = limits
        self.me = me
        self.engineio_path = engineio_path.encode("latin-1")
        self.trusted = trusted
        self.inner = inner  # the app server's HTTP protocol factory (AppServer.protocol)
        self.channel = channel
        self.stats = GateStats()
        # How long the app took to answer what the gate served, as the master times
        # what it relays (from the whole request to the end of the answer).
        self.latency = {kind: Latency() for kind in ("handshake", "poll", "send")}
        self.gates: set[PollingGate] = set()
        self.stopping = False
        self.upgrades_here = upgrades_here
        with contextlib.suppress(OSError):
            channel.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SNDBUF)

    def figures(self) -> dict[str, int]:
        """The counters that are not zero, for the heartbeat."""
        return {k: v for k, v in dataclasses.asdict(self.stats).items() if v}

    def latency_figures(self) -> dict[str, tuple[list[int], float]]:
        """The histograms with anything in them (cumulative), for the heartbeat."""
        return {kind: (list(h.counts), h.total_s) for kind, h in self.latency.items()
                if h.total_s or any(h.counts)}

    def serves(self, req: Request, known: bytes = b"") -> bytes | None:
        """The sid of one of this worker's sessions' requests (or upgrades), else None
        (``known``: a sid found ours before on the connection)."""
        if req.upgrade and not self.upgrades_here:
            return None
        if req.forward_claim is not None or self.stopping:
            return None  # a claim to come from another host: the master verifies it
        path, _, query = req.url.partition(b"?")
        return serves_here(path, req.method, req.version, query,
                           engineio_path=self.engineio_path, me=self.me, known=known)

    async def adopt(self, sock: socket.socket, data: bytes, peer: Peer | None,
                    returns: int, admitted: bool) -> None:
        try:
            _, protocol = await asyncio.get_running_loop().connect_accepted_socket(
                lambda: PollingGate(self, peer, returns, admitted), sock)
        except OSError:
            sock.close()
            return
        if data:
            protocol.data_received(data)

    def give_back(self, raw: socket.socket, data: bytes, peer: Peer | None,
                  returns: int) -> bool:
        try:
            socket.send_fds(self.channel, [encode_passed(RETURNED, data, peer, returns)],
                            [raw.fileno()])
        except OSError as exc:
            self.stats.return_failures += 1
            if self.stats.return_failures == 1 or self.stats.return_failures % 1000 == 0:
                log.warning("could not give a polling connection back to the master "
                            "(%d so far; answered 503): %s", self.stats.return_failures, exc)
            return False
        self.stats.returns += 1
        return True

    def release_all(self) -> None:
        """The worker stops: every connection goes back once its answer is written."""
        self.stopping = True
        for gate in list(self.gates):
            gate.release()


class PollingGate(HttpConnection):
    def __init__(self, desk: GateDesk, peer: Peer | None, returns: int,
                 admitted: bool = False) -> None:
        """``admitted``: the first request is a handshake the master admitted."""
        super().__init__(desk.limits, desk.stats)
        self._desk = desk
        self._peer = peer
        self._returns = returns
        self._admitted = admitted
        self._client_ip = ""
        self._forwarded: list[bytes] = []  # the header naming the client, as the master sets
        self._inner: Any = None  # the app's HTTP protocol
        self._inner_transport: InnerTransport | None = None
        self._end = ResponseEnd()
        self._response: httptools.HttpResponseParser | None = None  # an answer in progress
        self._timed: Latency | None = None  # its kind's histogram
        self._started = 0.0
        self._close_after = False
        self._returning = False  # a request that is not ours: give the connection back
        self._releasing = False  # the worker stops: give it back after this answer
        self._flush_tries = 0
        self._sid = b""  # the last sid served here: ours, not parsed again

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._peer is not None:
            self._client_ip = self._peer[0]
        else:
            peername = transport.get_extra_info("peername")
            self._client_ip = str(peername[0]) if peername else ""
        self._forwarded = [b"X-Forwarded-For: " + self._client_ip.encode("latin-1")]
        self._desk.gates.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._desk.gates.discard(self)
        self._drop_inner(exc)

    # HttpConnection's hooks

    def _serve(self, req: Request) -> None:
        admitted, self._admitted = self._admitted, False
        if not admitted:
            sid = self._desk.serves(req, self._sid)
            if sid is None:
                self._returning = True
                if not self._feeding:
                    self._give_back()
                return  # else once the parser is done with this read (see _fed)
            self._sid = sid
        if req.upgrade:
            self._upgrade(req)
            return
        self._desk.stats.requests += 1
        self._timed = self._desk.latency[
            "handshake" if admitted else "poll" if req.method == b"GET" else "send"]
        self._started = time.monotonic()
        self._close_after = not req.keep_alive
        self._response = self._end.start()
        inner = self._inner if self._inner is not None else self._open_inner()
        forwarded = self._forwarded
        if self._desk.trusted and req.xff is not None:
            client = resolve_client(self._client_ip, req.xff.decode("latin-1"),
                                    self._desk.trusted)
            forwarded = [b"X-Forwarded-For: " + client.encode("latin-1")]
        inner.data_received(req.upstream(forwarded))

    def _fed(self) -> None:
        if self._returning and self._phase_idle():
            self._give_back()

    def _streams(self, req: Request) -> bool:
        # Not ours, and large: back to the master as soon as its head is here.
        return req.length is not None and req.length > _RETURN_EARLY_OVER \
            and self._desk.serves(req, self._sid) is None

    def _stream(self, req: Request) -> None:
        if self._active is not None or self._queue:
            self._transport.close()  # a pipelined upload behind an answer: not served
            return
        self._send_back(req.head() + bytes(req.body))

    def _stop_answer(self) -> None:
        self._response = self._timed = None

    def _answer_paused(self, paused: bool) -> None:
        if self._inner is not None:
            if paused:
                self._inner.pause_writing()
            else:
                self._inner.resume_writing()

    # the app's protocol (through InnerTransport)

    def _upgrade(self, req: Request) -> None:
        """One of our sessions upgrades: the app's protocol takes the socket itself,
        as it takes one the master hands off (the parser read nothing past the head)."""
        self._detach()
        self._drop_inner()
        self._active = None
        self._desk.gates.discard(self)
        self._desk.stats.upgrades += 1
        protocol = self._desk.inner(self._peer)
        transport = self._transport
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self._paused:
            self._paused = False
            transport.resume_reading()
        protocol.data_received(req.head() + req.rest)

    def _open_inner(self) -> Any:
        inner = self._desk.inner(None)
        transport = InnerTransport(self)
        transport.peer = self._client_ip
        transport.set_protocol(inner)
        self._inner, self._inner_transport = inner, transport
        inner.connection_made(transport)
        if self._writing_paused:
            inner.pause_writing()
        return inner

    def _drop_inner(self, exc: Exception | None = None) -> None:
        inner, transport = self._inner, self._inner_transport
        self._inner = self._inner_transport = None
        if inner is not None and transport is not None:
            transport.detach()
            asyncio.get_running_loop().call_soon(inner.connection_lost, exc)

    def gone(self) -> bool:
        return self._closed or self._detached

    def write_buffer_size(self) -> int:
        return 0 if self.gone() else int(self._transport.get_write_buffer_size())

    def inner_write(self, data: bytes) -> None:
        if self.gone():
            return
        self._transport.write(data)
        response = self._response
        if response is None:
            return  # not an answer to a request (aiohttp's own 400, say): closing next
        try:
            response.feed_data(data)
        except httptools.HttpParserError:
            log.warning("gate: the app's answer is not HTTP/1.1 the gate can follow; closing")
            self._response = self._end.parser = None
            self._transport.close()
            return
        if self._end.done:
            self._response = None
            if self._timed is not None:
                self._timed.observe(time.monotonic() - self._started)
                self._timed = None
            self._answered(close=self._close_after or not self._end.keep_alive)

    def inner_closed(self, transport: InnerTransport) -> None:
        """The app's protocol closed: mid-answer, so does the client's connection;
        between answers (its keep-alive timer), a new one serves the next request."""
        if transport is not self._inner_transport:
            return
        answering = self._response is not None or self._active is not None
        self._drop_inner()
        if answering and not self.gone():
            self._response = None
            self._transport.close()

    def _answered(self, *, close: bool) -> None:
        if close:
            self._finish(close=True)
        elif self._releasing and not self._queue:
            self._active = None
            self._give_back()
        else:
            self._finish(close=False)

    # giving the connection back

    def release(self) -> None:
        """Give the connection back now if it is idle, else after its answer."""
        self._releasing = True
        if self._active is None and not self._queue and self._phase_idle() and not self.gone():
            self._give_back()

    def _give_back(self) -> None:
        """Back to the master, with the requests not answered (the active one first)."""
        pending = [self._active] if self._active is not None else []
        pending += self._queue
        self._send_back(b"".join(req.replay() for req in pending))

    def _send_back(self, data: bytes) -> None:
        if self.gone():
            return
        if self._transport.get_write_buffer_size():  # an answer still being written
            self._flush_tries += 1
            if self._flush_tries > _FLUSH_TRIES:
                self._transport.close()
                return
            self._detach_reading()
            asyncio.get_running_loop().call_later(_FLUSH_POLL_S, self._send_back, data)
            return
        raw = self._transport.get_extra_info("socket")
        if raw is None or not self._desk.give_back(raw, data, self._peer, self._returns + 1):
            if self._active is not None or data:
                self._transport.write(json_error(503, "the worker could not pass the "
                                                      "connection on", close=True))
            self._transport.close()
            return
        self._detach()
        self._drop_inner()
        self._transport.abort()  # our copy, without a shutdown: the master's stays open

    def _detach_reading(self) -> None:
        """Read nothing more while the return waits: the rest is the master's."""
        if not self._paused:
            self._paused = True
            self._transport.pause_reading()
        self._cancel_timer()
