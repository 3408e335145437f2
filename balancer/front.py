"""The public HTTP/1.1 server: an asyncio Protocol on httptools, routing each request by sid.

This is the master's hot path (``[balancer] http = "httptools"``, the default).
Each client connection gets one :class:`FrontProtocol`.  It feeds the bytes to
httptools' request parser (llhttp, uvicorn's parser), which frames requests and
refuses bad framing itself: Content-Length with Transfer-Encoding, duplicate or
bad Content-Lengths, bad chunk sizes, bad versions, bare LFs (400 and close).
Each complete request is routed on its own (:func:`balancer.routing.route`),
so one keep-alive connection (nginx's, say) can carry the requests of sessions
that live on different workers; it is then:

* refused right here: 400 for an unknown sid, 503 with no worker ready, 429
  past a handshake rate or session cap (the same decisions as
  :meth:`balancer.proxy.Balancer.admit`), 413 for a body over
  ``max_message_bytes``, 414/431 for a head over ``max_header_bytes`` or with
  more than ``max_header_count`` headers;
* or sent whole (bodies are buffered: python-engineio reads Content-Length,
  and a chunked body reaches it with one) to the owner worker's Unix socket
  through :class:`balancer.upstream.UpstreamPool`, whose answer is written back
  as it arrives, with backpressure both ways;
* or, for a WebSocket upgrade, handed off to its worker with the head it
  carried (``SCM_RIGHTS``, as the front door does for a first request).

Requests on a connection are answered in order; pipelined ones wait (reading
pauses while one waits).  What this layer does not serve itself goes to
aiohttp's server (:mod:`balancer.proxy`), which takes over the connection with
the bytes of the request re-sent to it: an upgrade in ``websocket = "tunnel"``
mode, or one whose handoff failed, and a request to the app's own routes with a
body over 256 KB (streamed to the worker, as before).  Both are rare, and the
connection stays with aiohttp afterwards.

Timers, one at a time: a request head must be complete within
``header_timeout_s`` (408, closed); a body must keep arriving, each part within
``idle_timeout_s`` of the last (408, closed); a kept-alive connection with no
request is closed after ``idle_timeout_s``.  A client that half-closes after a
whole request still gets its answer, for up to
:data:`balancer.headguard.HALF_CLOSE_DRAIN_S`, then the connection closes.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httptools

from .exceptions import UpstreamError, UpstreamUnreachable
from .forwarding import resolve_client
from .handoff import encode_handoff
from .headguard import HALF_CLOSE_DRAIN_S, RESPONSE_408
from .hostforward import FORWARD_HEADER_BYTES
from .peer import Peer
from .peerauth import ForwardClaim
from .routing import SESSION_UNKNOWN, Forward, Reject, ToHost, extract_sid, route, route_host

if TYPE_CHECKING:
    from .proxy import Balancer
    from .upstream import Exchange, UpstreamPool

__all__ = ["FrontProtocol", "error_response", "response_head"]

log = logging.getLogger("siocluster.balancer")

# Request headers the worker does not get from the client: hop-by-hop ones, the
# framing (the balancer sets Content-Length), the forwarded ones (the balancer
# sets them), and Expect (the balancer already answered 100-continue).
_DROP_REQUEST = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
    b"trailer", b"transfer-encoding", b"upgrade", b"content-length", b"x-forwarded-for",
    b"x-forwarded-proto", b"expect",
})
# Response headers the client does not get from the worker.
_DROP_RESPONSE = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
    b"trailer", b"transfer-encoding", b"upgrade", b"content-length",
})
# App-route bodies over this are streamed, by aiohttp's server (see the docstring).
STREAM_BODY_OVER = 256 * 1024
# An answer is written once when it fits this; larger ones are streamed.
_COALESCE = 64 * 1024
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 413: b"Payload Too Large",
            414: b"URI Too Long", 429: b"Too Many Requests",
            431: b"Request Header Fields Too Large", 502: b"Bad Gateway",
            503: b"Service Unavailable"}


def response_head(status: int, reason: bytes, headers: list[tuple[bytes, bytes]],
                  extra: list[bytes], *, close: bool) -> bytes:
    """An HTTP/1.1 response head for the client, without the worker's hop-by-hop
    headers, with ``extra`` lines (the framing) and ``Connection: close``.  Pure."""
    parts = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
    for name, value in headers:
        if name.lower() not in _DROP_RESPONSE:
            parts.append(name + b": " + value + b"\r\n")
    for line in extra:
        parts.append(line + b"\r\n")
    if close:
        parts.append(b"Connection: close\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def error_response(status: int, body: bytes, *, content_type: bytes = b"application/json",
                   headers: tuple[tuple[bytes, bytes], ...] = (), close: bool = False) -> bytes:
    """A whole response the balancer answers itself.  Pure."""
    return response_head(
        status, _REASONS.get(status, b"Error"), [(b"Content-Type", content_type), *headers],
        [b"Content-Length: %d" % len(body)], close=close,
    ) + body


def _json_error(status: int, message: str, *, close: bool = False) -> bytes:
    body = json.dumps({"code": status, "message": message}).encode()
    return error_response(status, body, close=close)


class _Refused(Exception):
    """A request head over a limit: answered ``status`` and closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Request:
    __slots__ = ("body", "chunked", "continue_", "headers", "keep_alive", "length", "method",
                 "rest", "stream", "upgrade", "url", "version", "xff")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.method = b""
        self.version = "1.1"
        self.body = bytearray()
        self.length: int | None = None
        self.chunked = False
        self.keep_alive = True
        self.upgrade = False  # a WebSocket upgrade: the parser stopped after its head
        self.stream = False  # a large body for aiohttp to stream
        self.continue_ = False
        self.rest = b""  # bytes after an upgrade's head
        self.xff: bytes | None = None

    def head(self) -> bytes:
        """The head as the client sent it (its headers as parsed)."""
        lines = [self.method + b" " + self.url + b" HTTP/" + self.version.encode() + b"\r\n"]
        lines += [n + b": " + v + b"\r\n" for n, v in self.headers]
        lines.append(b"\r\n")
        return b"".join(lines)


_IDLE, _HEAD, _BODY = 0, 1, 2  # where the parser is: between requests, in a head, in a body
_DRAIN, _LINGER = 3, 4  # timer phases: answering after a half-close, reading a refusal away
# How long a refused request's remaining bytes are read away before closing.
_LINGER_S = 2.0


class FrontProtocol(asyncio.Protocol):
    def __init__(self, balancer: Balancer, peer: Peer | None,
                 fallback: Callable[[], asyncio.Protocol]) -> None:
        """``peer``: the client a PROXY header named (None: the socket's peer).
        ``fallback``: aiohttp's protocol, for what this layer does not serve."""
        self._b = balancer
        self._limits = balancer.limits
        self._peer = peer
        self._fallback = fallback
        self._transport: Any = None  # uvloop's transports are not asyncio.Transport subclasses
        self._parser = httptools.HttpRequestParser(self)
        self._parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self._client_ip = ""
        self._phase = _IDLE
        self._req: _Request | None = None  # the one being parsed
        self._head_size = 0
        self._header_count = 0
        self._queue: collections.deque[_Request] = collections.deque()
        self._active: _Request | None = None  # the one being answered
        self._exchange: Exchange | None = None
        self._started = 0.0
        self._kind = ""
        self._to_peer = ""  # several hosts: the peer host this answer comes from
        self._claim: ForwardClaim | None = None  # a verified forward's client
        # The answer being written: head and body parts not yet written, framing.
        self._out: list[bytes] = []
        self._out_size = 0
        self._sent = False  # some of the answer was written: a failure now can only close
        self._chunk_out = False
        self._close_after = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_phase = -1
        self._body_last = 0.0
        self._paused = False
        self._writing_paused = False
        self._half_closed = False
        self._upgraded = False  # the parser stopped at an upgrade
        self._discarding = False  # refused mid-body: read the rest away, then close
        self._detached = False  # handed off, or given to aiohttp
        self._closed = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        if self._peer is not None:
            self._client_ip = self._peer[0]
        else:
            peername = transport.get_extra_info("peername")
            self._client_ip = str(peername[0]) if peername else ""
        # The front door timed the first head while peeking; the bytes are here.
        self._set_timer(_HEAD)

    def data_received(self, data: bytes) -> None:
        if self._detached or self._discarding:
            return
        if self._upgraded:
            if self._queue and self._queue[-1].upgrade:
                self._queue[-1].rest += data
            return
        was = self._phase
        if not self._feed(data) or self._closed or self._detached:
            return
        if self._phase == _HEAD and was == _HEAD:  # every byte of this read was head
            self._head_size += len(data)
            if self._head_size > self._limits.max_header_bytes:
                self._refuse(431, "request head too large")
                return
        req = self._req
        if req is not None and req.stream and self._phase == _BODY:
            self._stream_to_aiohttp(req)
            return
        if self._queue and not self._paused:
            self._paused = True  # pipelined requests wait for the one answered
            self._transport.pause_reading()
        self._update_timer()

    def _feed(self, data: bytes) -> bool:
        """Parse ``data``; False when the connection was refused for it."""
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._on_upgrade(data[int(exc.args[0]):])
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Refused):
                self._refuse(cause.status, cause.message)
            else:
                log.exception("front door: request handling failed", exc_info=cause)
                self._refuse(400, "bad request")
            return False
        except httptools.HttpParserError as exc:
            self._refuse(400, f"bad request: {exc}")
            return False
        return True

    def eof_received(self) -> bool | None:
        if self._detached or self._discarding:
            return None
        self._half_closed = True
        if self._phase == _IDLE and (self._active is not None or self._queue):
            # Every request has arrived: answer them, then close (a FIN cannot tell a
            # half-close from a client that is gone, so not for ever).
            self._set_timer(_DRAIN, HALF_CLOSE_DRAIN_S)
            return True
        return None  # mid-head, mid-body or idle: close now

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._cancel_timer()
        if self._exchange is not None:
            self._exchange.abort()
            self._exchange = None
        self._queue.clear()
        self._active = None

    def pause_writing(self) -> None:
        self._writing_paused = True
        if self._exchange is not None:
            self._exchange.pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._exchange is not None:
            self._exchange.resume_reading()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._req = _Request()
        self._phase = _HEAD
        self._head_size = 0
        self._header_count = 0

    def on_url(self, url: bytes) -> None:
        req = self._req
        assert req is not None
        req.url += url
        if len(req.url) > self._limits.max_header_bytes:
            raise _Refused(414, "request target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        req = self._req
        assert req is not None
        self._header_count += 1
        limits = self._limits
        if limits.max_header_count and self._header_count > limits.max_header_count:
            raise _Refused(431, f"more than {limits.max_header_count} request headers")
        req.headers.append((name, value))
        low = name.lower()
        if low == b"content-length":
            req.length = int(value)
        elif low == b"transfer-encoding":
            req.chunked = True
        elif low == b"x-forwarded-for" and req.xff is None:
            req.xff = value
        elif low == b"expect" and value.lower() == b"100-continue":
            req.continue_ = True

    def on_headers_complete(self) -> None:
        req = self._req
        assert req is not None
        parser = self._parser
        req.method = parser.get_method()
        req.version = parser.get_http_version()
        req.keep_alive = parser.should_keep_alive()
        size = len(req.url) + sum(len(n) + len(v) + 4 for n, v in req.headers)
        if size > self._limits.max_header_bytes:
            raise _Refused(431, "request head too large")
        self._head_size = 0
        self._phase = _BODY
        self._body_last = time.monotonic()
        if parser.should_upgrade():
            if self._is_websocket(req):
                req.upgrade = True
            else:
                req.keep_alive = False  # another protocol: answered as plain HTTP, then closed
            return
        limit = self._limits.max_message_bytes
        if req.length is not None:
            path = req.url.partition(b"?")[0]
            if req.length > STREAM_BODY_OVER and path != self._b.engineio_path_bytes():
                req.stream = True
                return
            if limit and req.length > limit:
                self._b.stats.too_large += 1
                raise _Refused(413, f"request body over {limit} bytes")
        if req.continue_ and (req.chunked or req.length) and not self._queue \
                and self._active is None:
            self._transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        req = self._req
        assert req is not None
        req.body += body
        self._body_last = time.monotonic()
        limit = self._limits.max_message_bytes
        if limit and req.chunked and len(req.body) > limit:
            self._b.stats.too_large += 1
            raise _Refused(413, f"request body over {limit} bytes")

    def on_message_complete(self) -> None:
        req, self._req = self._req, None
        assert req is not None
        self._phase = _IDLE
        req.stream = False  # it all came in one read: served here after all
        self._queue.append(req)
        if self._active is None and not req.upgrade:
            self._next()  # (an upgrade once the parser says where its head ended)

    # refusals, timers

    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` and close.  The answer goes out with a FIN, and what the
        client still sends (the rest of a refused body) is read away for up to
        :data:`_LINGER_S`: closing on unread bytes would reset the connection, and
        the reset can destroy the answer before the client reads it."""
        if self._closed or self._discarding:
            return
        self._discarding = True
        if self._active is not None or self._queue:
            self._transport.close()  # an answer is owed first: no room for this one
            return
        self._transport.write(_json_error(status, message, close=True))
        if self._transport.can_write_eof():
            self._transport.write_eof()
        self._set_timer(_LINGER, _LINGER_S)

    def _set_timer(self, phase: int, delay: float | None = None) -> None:
        self._cancel_timer()
        if delay is None:
            delay = self._limits.header_timeout_s if phase == _HEAD else self._limits.idle_timeout_s
        if not delay:
            return
        self._timer_phase = phase
        self._timer = asyncio.get_running_loop().call_later(delay, self._expired)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_phase = -1

    def _update_timer(self) -> None:
        """After a read: time the head or body in progress, or the idle wait."""
        phase = self._phase
        if self._timer_phase in (_DRAIN, _LINGER):
            return  # closing in any case
        if phase == _IDLE:
            if self._active is None and not self._queue:
                if self._timer_phase != _IDLE:
                    self._set_timer(_IDLE)
            elif self._timer is not None:
                self._cancel_timer()
        elif phase != self._timer_phase:
            self._set_timer(phase)

    def _expired(self) -> None:
        self._timer = None
        phase, self._timer_phase = self._timer_phase, -1
        if self._closed or self._detached:
            return
        if phase == _BODY:
            left = self._body_last + self._limits.idle_timeout_s - time.monotonic()
            if left > 0:
                self._timer_phase = _BODY
                self._timer = asyncio.get_running_loop().call_later(left, self._expired)
                return
            self._b.stats.body_timeouts += 1
            if self._active is None and not self._queue:
                self._transport.write(_json_error(
                    408, f"request body not received within {self._limits.idle_timeout_s:g}s",
                    close=True))
        elif phase == _HEAD:
            self._b.stats.head_timeouts += 1
            if self._active is None and not self._queue:
                self._transport.write(RESPONSE_408)
        self._transport.close()

    # serving

    def _next(self) -> None:
        """Serve the next complete request, if none is being answered."""
        while self._active is None and self._queue and not self._closed and not self._detached:
            req = self._queue.popleft()
            self._active = req
            if self._timer_phase == _IDLE:
                self._cancel_timer()
            self._serve(req)

    def _serve(self, req: _Request) -> None:
        b = self._b
        if req.upgrade and b.config.websocket != "handoff":
            self._to_aiohttp(req.head() + req.rest)
            return
        b.stats.requests += 1
        if req.upgrade:
            # Past its head the parser reads no more HTTP: a refused upgrade
            # (400, 429, 503) closes the connection after its answer.
            req.keep_alive = False
        path, _, query = req.url.partition(b"?")
        sid = extract_sid(query.decode("latin-1")) if b"sid=" in query else None
        host_id = b.directory.host_id
        self._claim = None
        if host_id and self._route_host(req, sid, host_id):
            return
        decision = route(sid, b.directory.views(), host_id)
        if isinstance(decision, Reject):
            if decision.status == 400:
                b.stats.session_unknown += 1
            else:
                b.stats.no_worker += 1
            self._answer(error_response(decision.status, decision.body,
                                        content_type=decision.content_type.encode(),
                                        close=not req.keep_alive))
            return
        client = self._client(req)
        engineio = path == b.engineio_path_bytes()
        if decision.new_session and engineio and not self._admitted(req, client, decision):
            return
        if req.upgrade:
            b.stats.upgrades += 1
            if not self._hand_off(req, decision):
                self._to_aiohttp(req.head() + req.rest)
            return
        extra = [b"X-Forwarded-For: " + client.encode("latin-1"), b"X-Forwarded-Proto: http"]
        body = bytes(req.body)
        if body or req.method in (b"POST", b"PUT", b"PATCH"):
            extra.append(b"Content-Length: %d" % len(body))
        head = [req.method + b" " + req.url + b" HTTP/1.1\r\n"]
        head += [n + b": " + v + b"\r\n" for n, v in req.headers if n.lower() not in _DROP_REQUEST]
        head += [line + b"\r\n" for line in extra]
        head.append(b"\r\n")
        if not engineio:
            self._kind = "app"
        elif decision.new_session:
            self._kind = "handshake"
        else:
            self._kind = "poll" if req.method == b"GET" else "send"
        self._send(req, b.pool(decision.slot, decision.generation), b"".join(head) + body)

    def _admitted(self, req: _Request, client: str, decision: Forward) -> bool:
        """A new session past the per-address limits (counted), or answered 429 here."""
        b = self._b
        refusal = b.admit(client, decision)
        if refusal is not None:
            status, message, retry_after = refusal
            body = json.dumps({"code": status, "message": message}).encode()
            self._answer(error_response(status, body,
                                        headers=((b"Retry-After", retry_after.encode()),),
                                        close=not req.keep_alive))
            return False
        b.directory.note_handshake(decision.slot, decision.generation)
        b.stats.handshakes += 1
        return True

    def _send(self, req: _Request, pool: UpstreamPool, data: bytes) -> None:
        self._started = time.monotonic()
        self._out = []
        self._out_size = 0
        self._sent = False
        self._chunk_out = False
        self._close_after = not req.keep_alive
        self._exchange = pool.exchange(data, self, head_only=req.method == b"HEAD")
        if self._writing_paused and self._exchange is not None:
            self._exchange.pause_reading()

    def _client(self, req: _Request) -> str:
        """The client's address: vouched for by another host, or resolved here."""
        if self._claim is not None:
            return self._claim.client_ip
        b = self._b
        if b.trusted and req.xff is not None:
            return resolve_client(self._client_ip, req.xff.decode("latin-1"), b.trusted)
        return self._client_ip

    # several hosts, one cluster (balancer.hostforward)

    def _route_host(self, req: _Request, sid: str | None, host_id: str) -> bool:
        """Whether the request was answered or forwarded to another host here;
        a verified forward's claim is kept for this request."""
        b = self._b
        claimed = next((v for n, v in req.headers if n.lower() == FORWARD_HEADER_BYTES), None)
        if claimed is not None:
            claim = b.hosts.verify(claimed.decode("latin-1"), req.method.decode("latin-1"),
                                   req.url.decode("latin-1"))
            if claim is None:
                log.warning("refused a request claiming to be forwarded by another host, "
                            "from %s", self._client_ip)
                self._answer(_json_error(
                    403, "not a genuine forward from a host of this cluster",
                    close=not req.keep_alive))
                return True
            self._claim = claim
        decision = route_host(sid, host=host_id, live_hosts=b.directory.live_hosts(),
                              forwarded=claimed is not None)
        address = None if not isinstance(decision, ToHost) else \
            b.directory.peer_address(decision.host)
        if isinstance(decision, Reject) or (decision is not None and address is None):
            b.stats.session_unknown += 1
            self._answer(error_response(SESSION_UNKNOWN.status, SESSION_UNKNOWN.body,
                                        content_type=SESSION_UNKNOWN.content_type.encode(),
                                        close=not req.keep_alive))
            return True
        if decision is None or address is None:
            return False
        if req.upgrade:
            # aiohttp's side tunnels it (Balancer.handle); a socket cannot be handed
            # to another machine, so the bytes are relayed for the session's life.
            self._to_aiohttp(req.head() + req.rest)
            return True
        client = self._client(req)
        body = bytes(req.body)
        head = [req.method + b" " + req.url + b" HTTP/1.1\r\n"]
        head += [n + b": " + v + b"\r\n" for n, v in req.headers
                 if n.lower() not in _DROP_REQUEST and n.lower() != FORWARD_HEADER_BYTES]
        head += [b"X-Forwarded-For: " + client.encode("latin-1") + b"\r\n",
                 b"X-Forwarded-Proto: http\r\n",
                 b.hosts.sign(b.directory.host_id, req.method.decode("latin-1"),
                              req.url.decode("latin-1"), client) + b"\r\n",
                 b"Content-Length: %d\r\n\r\n" % len(body)]
        data = b"".join(head) + body
        stats = b.hosts.stats(decision.host)
        stats.requests += 1
        stats.bytes_out += len(data)
        self._kind = "forward"
        self._to_peer = decision.host
        self._send(req, b.hosts.pool(address), data)
        return True

    def _answer(self, response: bytes) -> None:
        """A whole answer from the balancer itself."""
        req = self._active
        if not self._closed:
            self._transport.write(response)
        self._finish(close=req is None or not req.keep_alive)

    def _finish(self, *, close: bool) -> None:
        self._active = None
        self._exchange = None
        if self._closed:
            return
        if close or (self._half_closed and not self._queue):
            self._transport.close()
            return
        if self._queue:
            self._next()
            return
        if self._paused and not self._upgraded:
            self._paused = False
            self._transport.resume_reading()
        self._update_timer()

    def _is_websocket(self, req: _Request) -> bool:
        for name, value in req.headers:
            if name.lower() == b"upgrade":
                return value.strip().lower() == b"websocket"
        return False

    def _on_upgrade(self, rest: bytes) -> None:
        """The parser stopped after an upgrade's head: no more HTTP on this connection."""
        self._upgraded = True
        self._phase = _IDLE
        if self._queue and self._queue[-1].upgrade:
            self._queue[-1].rest = rest
        if not self._paused:
            self._paused = True
            self._transport.pause_reading()
        self._cancel_timer()
        if self._active is None:
            self._next()

    def _hand_off(self, req: _Request, decision: Forward) -> bool:
        """Pass the connection, with the head it carried, to the worker."""
        b = self._b
        channel = b.directory.handoff_channel(decision.slot, decision.generation)
        raw = self._transport.get_extra_info("socket")
        if channel is None or raw is None:
            return False
        try:
            named = self._peer if self._claim is None else (self._claim.client_ip,
                                                            self._claim.client_port)
            socket.send_fds(channel, [encode_handoff(req.head() + req.rest, named)],
                            [raw.fileno()])
        except OSError:
            b.stats.handoff_failures += 1
            return False
        b.stats.handoffs += 1
        self._detached = True
        self._cancel_timer()
        self._transport.abort()  # our copy, without a shutdown: the worker's stays open
        return True

    def _stream_to_aiohttp(self, req: _Request) -> None:
        """A large body to the app's routes: aiohttp's server streams it."""
        if self._active is not None or self._queue:
            self._transport.close()  # a pipelined upload behind an answer: not served
            return
        self._to_aiohttp(req.head() + bytes(req.body))

    def _to_aiohttp(self, data: bytes) -> None:
        """Give the connection, and ``data`` (what it has sent so far that is not
        answered), to aiohttp's server for the rest of its life."""
        self._detached = True
        self._cancel_timer()
        self._active = None
        protocol = self._fallback()
        transport = self._transport
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self._paused:
            self._paused = False
            transport.resume_reading()
        protocol.data_received(data)

    # the upstream answer (balancer.upstream.Sink)

    def upstream_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]],
                      length: int | None, chunked: bool) -> None:
        if self._closed:
            return
        req = self._active
        extra: list[bytes] = []
        if length is not None:
            extra.append(b"Content-Length: %d" % length)
        elif status in (204, 304) or status < 200 or (req is not None and req.method == b"HEAD"):
            pass  # no body
        elif req is not None and req.version == "1.1":
            extra.append(b"Transfer-Encoding: chunked")
            self._chunk_out = True
        else:
            self._close_after = True  # an HTTP/1.0 client: the close ends the body
        self._out.append(response_head(status, reason, headers, extra, close=self._close_after))

    def upstream_body(self, data: bytes) -> None:
        if self._to_peer:
            self._b.hosts.stats(self._to_peer).bytes_in += len(data)
        if self._closed:
            return
        if self._chunk_out:
            self._out.append(b"%x\r\n" % len(data))
            self._out.append(data)
            self._out.append(b"\r\n")
        else:
            self._out.append(data)
        self._out_size += len(data)
        if self._out_size > _COALESCE:
            self._transport.write(b"".join(self._out))
            self._out.clear()
            self._out_size = 0
            self._sent = True

    def upstream_done(self) -> None:
        if self._to_peer:
            self._b.directory.note_peer(self._to_peer, None)
            self._to_peer = ""
        if self._closed:
            return
        if self._chunk_out:
            self._out.append(b"0\r\n\r\n")
        self._transport.write(b"".join(self._out))
        self._out.clear()
        self._b.stats.latency[self._kind].observe(time.monotonic() - self._started)
        self._finish(close=self._close_after)

    def upstream_failed(self, error: UpstreamError) -> None:
        self._exchange = None
        peer, self._to_peer = self._to_peer, ""
        if peer:
            self._b.hosts.stats(peer).errors += 1
            self._b.directory.note_peer(peer, str(error))
            log.warning("host %s unreachable: %s", peer, error)
        if self._closed:
            return
        if peer and isinstance(error, UpstreamUnreachable) and not self._sent:
            # Nothing listens there: the host is gone even if its lease has not
            # expired yet, and so are its sessions.  Say so at once.
            self._b.stats.session_unknown += 1
            self._out.clear()
            self._answer(error_response(SESSION_UNKNOWN.status, SESSION_UNKNOWN.body,
                                        content_type=SESSION_UNKNOWN.content_type.encode(),
                                        close=self._close_after))
            return
        self._b.stats.upstream_errors += 1
        log.debug("worker unreachable: %s", error)
        if self._sent:
            self._finish(close=True)  # part of the answer is out: only closing tells
            return
        self._out.clear()
        self._answer(_json_error(502, "worker unavailable", close=self._close_after))
