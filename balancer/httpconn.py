"""One client's HTTP/1.1 connection to the master: framing, limits, timers and order.

:class:`HttpConnection` is an asyncio Protocol that feeds the bytes to
httptools' request parser (llhttp, uvicorn's parser), which frames requests and
refuses bad framing itself: Content-Length with Transfer-Encoding, duplicate or
bad Content-Lengths, bad chunk sizes, bad versions, bare LFs (400 and close).
On top of the parser it enforces the head and body limits (414, 431, 413), and
keeps the requests of a connection in order: pipelined ones wait, reading
paused, until the one being answered is done.  What to do with a request is
the subclass's (:class:`balancer.front.FrontProtocol`): :meth:`_serve` answers
it, then calls :meth:`_finish`.

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
import logging
import time
from typing import Any, Protocol

import httptools

from .config import LimitsConfig
from .headguard import HALF_CLOSE_DRAIN_S, RESPONSE_408
from .httpmsg import CONTINUE, Refused, Request, json_error
from .peerauth import FORWARD_HEADER

__all__ = ["ConnectionStats", "HttpConnection"]

log = logging.getLogger("siocluster.balancer")

_IDLE, _HEAD, _BODY = 0, 1, 2  # where the parser is: between requests, in a head, in a body
_DRAIN, _LINGER = 3, 4  # timer phases: answering after a half-close, reading a refusal away
# How long a refused request's remaining bytes are read away before closing.
_LINGER_S = 2.0
_FORWARD_HEADER = FORWARD_HEADER.encode()


class ConnectionStats(Protocol):
    too_large: int
    head_timeouts: int
    body_timeouts: int


class HttpConnection(asyncio.Protocol):
    def __init__(self, limits: LimitsConfig, stats: ConnectionStats) -> None:
        self._limits = limits
        self._stats = stats
        self._transport: Any = None  # uvloop's transports are not asyncio.Transport subclasses
        self._parser = httptools.HttpRequestParser(self)
        self._parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self._phase = _IDLE
        self._req: Request | None = None  # the one being parsed
        self._head_size = 0
        self._header_count = 0
        self._queue: collections.deque[Request] = collections.deque()
        self._active: Request | None = None  # the one being answered
        self._timer: asyncio.TimerHandle | None = None
        self._timer_phase = -1
        self._deadline = 0.0  # of the phase timed (loop time)
        self._body_last = 0.0
        self._paused = False
        self._writing_paused = False
        self._half_closed = False
        self._upgraded = False  # the parser stopped at an upgrade
        self._discarding = False  # refused mid-body: read the rest away, then close
        self._detached = False  # handed off, or given to another protocol
        self._feeding = False  # in the parser: it may hold bytes of a next request
        self._closed = False

    # what the subclass does with requests

    def _serve(self, req: Request) -> None:
        """Answer ``req`` (the active one), then call :meth:`_finish`."""
        raise NotImplementedError

    def _streams(self, req: Request) -> bool:
        """Whether ``req``'s body (Content-Length over the limits' reach) is streamed
        by :meth:`_stream` instead of being read whole here."""
        return False

    def _stream(self, req: Request) -> None:
        raise NotImplementedError

    def _stop_answer(self) -> None:
        """The connection is gone: drop the answer in progress."""

    def _answer_paused(self, paused: bool) -> None:
        """The client reads too slowly (True) or again (False)."""

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
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
            self._stream(req)
            return
        if self._queue and not self._paused:
            self._paused = True  # pipelined requests wait for the one answered
            self._transport.pause_reading()
        self._update_timer()

    def _fed(self) -> None:
        """``data_received``'s bytes are all parsed (a decision :meth:`_serve` took
        in the middle of them may need to know that no more are held here)."""

    def _feed(self, data: bytes) -> bool:
        """Parse ``data``; False when the connection was refused for it."""
        self._feeding = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._on_upgrade(data[int(exc.args[0]):])
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, Refused):
                self._refuse(cause.status, cause.message)
            else:
                log.exception("front door: request handling failed", exc_info=cause)
                self._refuse(400, "bad request")
            return False
        except httptools.HttpParserError as exc:
            self._refuse(400, f"bad request: {exc}")
            return False
        finally:
            self._feeding = False
        self._fed()
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
        self._stop_answer()
        self._queue.clear()
        self._active = None

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._answer_paused(True)

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._answer_paused(False)

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._req = Request()
        self._phase = _HEAD
        self._head_size = 0
        self._header_count = 0

    def on_url(self, url: bytes) -> None:
        req = self._req
        assert req is not None
        req.url += url
        if len(req.url) > self._limits.max_header_bytes:
            raise Refused(414, "request target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        req = self._req
        assert req is not None
        self._header_count += 1
        limits = self._limits
        if limits.max_header_count and self._header_count > limits.max_header_count:
            raise Refused(431, f"more than {limits.max_header_count} request headers")
        req.headers.append((name, value))
        low = name.lower()
        if low == b"content-length":
            req.length = int(value)
        elif low == b"transfer-encoding":
            req.chunked = True
        elif low == b"x-forwarded-for" and req.xff is None:
            req.xff = value
        elif low == _FORWARD_HEADER and req.forward_claim is None:
            req.forward_claim = value
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
            raise Refused(431, "request head too large")
        self._head_size = 0
        self._phase = _BODY
        self._body_last = time.monotonic()
        if parser.should_upgrade():
            if req.is_websocket():
                req.upgrade = True
            else:
                req.keep_alive = False  # another protocol: answered as plain HTTP, then closed
            return
        limit = self._limits.max_message_bytes
        if req.length is not None:
            if self._streams(req):
                req.stream = True
                return
            if limit and req.length > limit:
                self._stats.too_large += 1
                raise Refused(413, f"request body over {limit} bytes")
        if req.continue_ and (req.chunked or req.length) and not self._queue \
                and self._active is None:
            self._transport.write(CONTINUE)

    def on_body(self, body: bytes) -> None:
        req = self._req
        assert req is not None
        req.body += body
        self._body_last = time.monotonic()
        limit = self._limits.max_message_bytes
        if limit and req.chunked and len(req.body) > limit:
            self._stats.too_large += 1
            raise Refused(413, f"request body over {limit} bytes")

    def on_message_complete(self) -> None:
        req, self._req = self._req, None
        assert req is not None
        self._phase = _IDLE
        req.stream = False  # it all came in one read: served here after all
        self._queue.append(req)
        if self._active is None and not req.upgrade:
            self._next()  # (an upgrade once the parser says where its head ended)

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
        self._transport.write(json_error(status, message, close=True))
        if self._transport.can_write_eof():
            self._transport.write_eof()
        self._set_timer(_LINGER, _LINGER_S)

    def _set_timer(self, phase: int, delay: float | None = None) -> None:
        """Time ``phase``.  A handle already armed to fire no later is kept: it
        fires early and :meth:`_expired` waits the rest, so a kept-alive
        connection costs no timer operation per request, only one re-arm per
        timeout."""
        if delay is None:
            delay = self._limits.header_timeout_s if phase == _HEAD else self._limits.idle_timeout_s
        if not delay:
            self._cancel_timer()
            return
        loop = asyncio.get_running_loop()
        self._deadline = deadline = loop.time() + delay
        self._timer_phase = phase
        timer = self._timer
        if timer is not None:
            if timer.when() <= deadline:
                return
            timer.cancel()
        self._timer = loop.call_at(deadline, self._expired)

    def _pause_timer(self) -> None:
        """Time nothing for now (a request is being answered); the handle stays armed
        for the next phase (:meth:`_set_timer`) while the connection lives."""
        self._timer_phase = -1

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
            elif self._timer_phase != -1:
                self._pause_timer()
        elif phase != self._timer_phase:
            self._set_timer(phase)

    def _expired(self) -> None:
        self._timer = None
        phase = self._timer_phase
        if phase == -1 or self._closed or self._detached:
            return  # paused: the next phase arms a timer again
        loop = asyncio.get_running_loop()
        if self._deadline > loop.time():  # armed for an earlier phase: wait the rest
            self._timer = loop.call_at(self._deadline, self._expired)
            return
        self._timer_phase = -1
        if phase == _BODY:
            left = self._body_last + self._limits.idle_timeout_s - time.monotonic()
            if left > 0:
                self._timer_phase = _BODY
                self._deadline = loop.time() + left
                self._timer = loop.call_at(self._deadline, self._expired)
                return
            self._stats.body_timeouts += 1
            if self._active is None and not self._queue:
                self._transport.write(json_error(
                    408, f"request body not received within {self._limits.idle_timeout_s:g}s",
                    close=True))
        elif phase == _HEAD:
            self._stats.head_timeouts += 1
            if self._active is None and not self._queue:
                self._transport.write(RESPONSE_408)
        self._transport.close()

    # order

    def _next(self) -> None:
        """Serve the next complete request, if none is being answered."""
        while self._active is None and self._queue and not self._closed and not self._detached:
            req = self._queue.popleft()
            self._active = req
            if self._timer_phase == _IDLE:
                self._pause_timer()
            self._serve(req)

    def _finish(self, *, close: bool) -> None:
        """The active request is answered: close, or serve the next one."""
        self._active = None
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

    def _phase_idle(self) -> bool:
        """No request is partly read (a pipelined one behind the active one)."""
        return self._phase == _IDLE

    def _detach(self) -> None:
        """The connection is someone else's now (a worker's, another protocol's)."""
        self._detached = True
        self._cancel_timer()
