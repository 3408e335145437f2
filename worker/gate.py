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
  :class:`_InnerTransport` straight to the client; httptools' response parser
  tells the gate where the answer ends;
* anything else (another worker's sid, a handshake, which the master admits,
  the app's own routes, an upgrade) sends the connection back to the master
  with the requests not yet answered, once the answers before are written
  (:meth:`GateDesk.give_back`).  A return that fails is answered 503, closed
  and counted.

When the worker stops, each gate gives its connection back after the answer
in progress, so a client's kept-alive connection outlives a rolling reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
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
from balancer.stickiness import serves_here

__all__ = ["GateDesk", "GateStats", "PollingGate"]

log = logging.getLogger("siocluster.worker")

_FORWARDED_PROTO = b"X-Forwarded-Proto: http"
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
    returns: int = 0  # connections given back to the master
    return_failures: int = 0  # ... that could not be (answered 503)
    too_large: int = 0
    head_timeouts: int = 0
    body_timeouts: int = 0


class GateDesk:
    """What every gate of this worker shares."""

    def __init__(self, limits: LimitsConfig, me: SidOwner, engineio_path: str,
                 trusted: TrustedProxies, inner: Callable[[], asyncio.Protocol],
                 channel: socket.socket) -> None:
        self.limits = limits
        self.me = me
        self.engineio_path = engineio_path.encode("latin-1")
        self.trusted = trusted
        self.inner = inner  # the app server's HTTP protocol factory
        self.channel = channel
        self.stats = GateStats()
        self.gates: set[PollingGate] = set()
        self.stopping = False
        with contextlib.suppress(OSError):
            channel.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SNDBUF)

    def figures(self) -> dict[str, int]:
        """The counters that are not zero, for the heartbeat."""
        return {k: v for k, v in dataclasses.asdict(self.stats).items() if v}

    def serves(self, req: Request) -> bool:
        path, _, query = req.url.partition(b"?")
        # An upgrade goes back too: the master hands it off as a WebSocket.
        return not self.stopping and not req.upgrade and serves_here(
            path, req.method, req.version, query, engineio_path=self.engineio_path, me=self.me)

    async def adopt(self, sock: socket.socket, data: bytes, peer: Peer | None,
                    returns: int) -> None:
        try:
            _, protocol = await asyncio.get_running_loop().connect_accepted_socket(
                lambda: PollingGate(self, peer, returns), sock)
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


class _ResponseEnd:
    """httptools' response parser calls this at the end of an answer."""

    __slots__ = ("done", "keep_alive", "parser")

    def __init__(self) -> None:
        self.done = False
        self.keep_alive = False
        self.parser: httptools.HttpResponseParser | None = None

    def start(self) -> httptools.HttpResponseParser:
        self.done = self.keep_alive = False
        self.parser = httptools.HttpResponseParser(self)
        return self.parser

    def on_message_complete(self) -> None:
        self.done = True
        # (llhttp forgets it once the message is over)
        self.keep_alive = self.parser is not None and self.parser.should_keep_alive()


class _InnerTransport(asyncio.Transport):
    """What the app's HTTP protocol writes to: the client's socket, through the gate.

    It reads nothing (the gate feeds it whole requests) and reports no socket
    and an empty peer, as the worker's Unix socket does, so the app believes
    the X-Forwarded-For the gate set, exactly as it believes the master's."""

    def __init__(self, gate: PollingGate) -> None:
        super().__init__()
        self._gate = gate
        self._closing = False
        self._protocol: Any = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._closing:
            self._gate.inner_write(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def is_closing(self) -> bool:
        return self._closing or self._gate.gone()

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._gate.inner_closed(self)

    def abort(self) -> None:
        self.close()

    def detach(self) -> None:
        """The gate let go of the app's protocol: it writes nothing more."""
        self._closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name in ("peername", "sockname"):
            return ""
        return default

    def get_write_buffer_size(self) -> int:
        return self._gate.write_buffer_size()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        pass  # the gate feeds whole requests, one at a time

    def resume_reading(self) -> None:
        pass

    def is_reading(self) -> bool:
        return not self._closing

    def can_write_eof(self) -> bool:
        return False

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol  # type: ignore[no-any-return]


class PollingGate(HttpConnection):
    def __init__(self, desk: GateDesk, peer: Peer | None, returns: int) -> None:
        super().__init__(desk.limits, desk.stats)
        self._desk = desk
        self._peer = peer
        self._returns = returns
        self._client_ip = ""
        self._inner: Any = None  # the app's HTTP protocol
        self._inner_transport: _InnerTransport | None = None
        self._end = _ResponseEnd()
        self._response: httptools.HttpResponseParser | None = None  # an answer in progress
        self._close_after = False
        self._returning = False  # a request that is not ours: give the connection back
        self._releasing = False  # the worker stops: give it back after this answer
        self._flush_tries = 0

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._peer is not None:
            self._client_ip = self._peer[0]
        else:
            peername = transport.get_extra_info("peername")
            self._client_ip = str(peername[0]) if peername else ""
        self._desk.gates.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._desk.gates.discard(self)
        self._drop_inner(exc)

    # HttpConnection's hooks

    def _serve(self, req: Request) -> None:
        if not self._desk.serves(req):
            self._returning = True
            if not self._feeding:
                self._give_back()
            return  # else once the parser is done with this read (see _fed)
        self._desk.stats.requests += 1
        self._close_after = not req.keep_alive
        self._response = self._end.start()
        inner = self._inner if self._inner is not None else self._open_inner()
        client = self._client_ip
        if self._desk.trusted and req.xff is not None:
            client = resolve_client(client, req.xff.decode("latin-1"), self._desk.trusted)
        inner.data_received(req.upstream([b"X-Forwarded-For: " + client.encode("latin-1"),
                                          _FORWARDED_PROTO]))

    def _fed(self) -> None:
        if self._returning and self._phase_idle():
            self._give_back()

    def _streams(self, req: Request) -> bool:
        # Not ours, and large: back to the master as soon as its head is here.
        return req.length is not None and req.length > _RETURN_EARLY_OVER \
            and not self._desk.serves(req)

    def _stream(self, req: Request) -> None:
        if self._active is not None or self._queue:
            self._transport.close()  # a pipelined upload behind an answer: not served
            return
        self._send_back(req.head() + bytes(req.body))

    def _stop_answer(self) -> None:
        self._response = None

    def _answer_paused(self, paused: bool) -> None:
        if self._inner is not None:
            if paused:
                self._inner.pause_writing()
            else:
                self._inner.resume_writing()

    # the app's protocol (through _InnerTransport)

    def _open_inner(self) -> Any:
        inner = self._desk.inner()
        transport = _InnerTransport(self)
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
            self._response = None
            self._transport.close()
            return
        if self._end.done:
            self._response = None
            self._answered(close=self._close_after or not self._end.keep_alive)

    def inner_closed(self, transport: _InnerTransport) -> None:
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
