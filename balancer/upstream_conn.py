"""One keep-alive connection from the master to an upstream (a worker's Unix
socket, or another host's balancer), carrying one :class:`balancer.upstream.Exchange`
at a time: the request goes out in one write, and the answer is parsed by
httptools' response parser and pushed to the exchange's sink as it arrives.

``read_timeout_s`` bounds the wait for each byte of the answer; an answer's
head over 64 KB, an unreadable answer or a switch of protocols fails the
exchange and closes the connection.  A connection closed before any byte of the
answer arrived is *stale* (the worker closed it while idle, so it never saw
the request): the exchange may retry once on a fresh one.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import httptools

from .exceptions import UpstreamError

if TYPE_CHECKING:
    from .upstream import Exchange

__all__ = ["UpstreamConnection"]

# An answer's head larger than this is garbage (a worker's is a few hundred bytes).
_MAX_HEAD = 64 * 1024


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to a worker, carrying one exchange at a time."""

    def __init__(self, read_timeout_s: float) -> None:
        self._read_timeout_s = read_timeout_s
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.exchange: Exchange | None = None
        self.idle_since = 0.0
        self.closed = False
        self._answered = False  # a byte of the current answer has arrived
        self._head_done = False  # the final answer's head has been parsed
        self._head_size = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._reason = b""
        self._length: int | None = None
        self._chunked = False
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._paused = False  # reading paused: the client is slow to take the answer

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.exchange is None:  # a worker does not speak unasked: drop the connection
            self.close()
            return
        self._answered = True
        self._last = time.monotonic()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"worker answer unreadable: {exc!r}"))
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamError("worker switched protocols on a plain request"))

    def eof_received(self) -> bool | None:
        return None  # close; connection_lost settles the exchange

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timer()
        exchange, self.exchange = self.exchange, None
        if exchange is None:
            return
        if not self._answered:
            exchange.stale(self)
        elif self._head_done and self._length is None and not self._chunked:
            exchange.finished(self, keep=False)  # a close-delimited body ends here
        else:
            exchange.fail(UpstreamError("worker closed the connection mid-answer"))

    def pause_writing(self) -> None:
        pass  # requests are small; the answer is what is flow-controlled

    def resume_writing(self) -> None:
        pass

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._head_done = False
        self._headers = []
        self._head_size = 0
        self._length = None
        self._chunked = False

    def on_status(self, reason: bytes) -> None:
        self._reason = reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._head_done:
            return  # a trailer
        self._head_size += len(name) + len(value)
        if self._head_size > _MAX_HEAD:
            raise UpstreamError("worker answer head too large")
        low = name.lower()
        if low == b"content-length":
            self._length = int(value)
        elif low == b"transfer-encoding":
            self._chunked = b"chunked" in value.lower()
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            return  # an interim answer (103 Early Hints...): the final one follows
        self._head_done = True
        exchange = self.exchange
        if exchange is not None:
            exchange.sink.upstream_head(status, self._reason, self._headers, self._length,
                                        self._chunked)
            if exchange.head_only:  # a HEAD's answer has no body, whatever its length says
                self.exchange = None
                exchange.finished(self, keep=False)

    def on_body(self, body: bytes) -> None:
        exchange = self.exchange
        if exchange is not None:
            exchange.sink.upstream_body(body)

    def on_message_complete(self) -> None:
        if not self._head_done:
            return  # the end of an interim answer
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.finished(self, keep=self._parser.should_keep_alive())

    # the exchange's side

    def start(self, exchange: Exchange) -> None:
        assert self.transport is not None
        self.exchange = exchange
        self.resume_reading()  # an answer may have ended just as its client paused it
        self._answered = False
        self._head_done = False
        self._last = time.monotonic()
        if self._timer is None:  # left armed between exchanges: one call_later, not one each
            self._arm(self._read_timeout_s)
        self.transport.write(exchange.data)

    def _arm(self, delay: float) -> None:
        self._timer = asyncio.get_running_loop().call_later(delay, self._check_timeout)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check_timeout(self) -> None:
        self._timer = None
        if self.exchange is None:
            return  # idle in the pool: the next exchange arms it again
        left = self._last + self._read_timeout_s - time.monotonic()
        if left > 0:
            self._arm(left)
            return
        self._fail(UpstreamError("worker did not answer in time"))

    def _fail(self, error: UpstreamError) -> None:
        exchange, self.exchange = self.exchange, None
        self.close()
        if exchange is not None:
            exchange.fail(error)

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed and not self._paused:
            self._paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed and self._paused:
            self._paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        self.closed = True
        self._cancel_timer()
        if self.transport is not None:
            self.transport.close()
