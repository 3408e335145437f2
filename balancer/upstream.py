"""A lean, streaming HTTP/1.1 client for requests to a worker's Unix socket.

The balancer's hot path (long-polling, and the app's own small requests) sends
every request it proxies through this client.  It is an :class:`asyncio.Protocol`
with httptools' (llhttp's) response parser, the parser uvicorn uses, and no
streams or tasks in the common case:

* a pool of idle keep-alive connections per worker generation, with no cap
  (a cap would queue long-polls behind each other);
* the request head and body go out in one write on a pooled connection, so a
  request on a warm pool costs no task switch; only opening a new connection
  awaits (in one task);
* the answer is pushed to a :class:`Sink` as it is parsed: the head, each piece
  of the body, the end.  The front door (:mod:`balancer.front`) writes it to
  the client from there, with backpressure (:meth:`Exchange.pause_reading`);
* ``read_timeout_s`` bounds the wait for each byte of the answer (a long-poll
  waits up to the app's ping interval);
* a pooled connection found closed before any byte of the answer arrived (the
  worker closed it while idle, so it never saw the request) is retried once on
  a fresh connection.

:meth:`UpstreamPool.request` is the same exchange with the answer collected in
memory, for callers that want the whole response.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass
from typing import Protocol

import httptools

from .exceptions import UpstreamError, UpstreamUnreachable

__all__ = ["IDLE_S", "Exchange", "Sink", "UpstreamPool", "UpstreamResponse"]

# Idle pooled connections are closed after this long.  Under load they are
# reused within milliseconds; after a burst, the pool shrinks back (each one is
# a descriptor in the master and in a worker), well before aiohttp's server in
# the worker would close them (75 s).
IDLE_S = 5.0
# An answer's head larger than this is garbage (a worker's is a few hundred bytes).
_MAX_HEAD = 64 * 1024


class Sink(Protocol):
    """Where an exchange delivers the worker's answer, in this order: one
    ``head``, any number of ``body``, then ``done``; or ``failed`` at any point
    (after a ``head`` too, when the worker dies mid-answer)."""

    def upstream_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]],
                      length: int | None, chunked: bool) -> None: ...

    def upstream_body(self, data: bytes) -> None: ...

    def upstream_done(self) -> None: ...

    def upstream_failed(self, error: UpstreamError) -> None: ...


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes


class _Stale(Exception):
    """A pooled connection closed before the worker read the request."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection to a worker, carrying one exchange at a time."""

    def __init__(self, pool: UpstreamPool) -> None:
        self._pool = pool
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
            self._arm(self._pool.read_timeout_s)
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
        left = self._last + self._pool.read_timeout_s - time.monotonic()
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


class Exchange:
    """One request to a worker and its answer, pushed to ``sink``.

    ``data`` is the whole request (head and body).  :meth:`abort` gives it up
    (the client went away): its connection is closed, never reused.
    """

    __slots__ = ("_conn", "_done", "_pool", "_reused", "_task", "data", "head_only", "sink")

    def __init__(self, pool: UpstreamPool, data: bytes, sink: Sink, head_only: bool) -> None:
        self._pool = pool
        self.data = data
        self.sink = sink
        self.head_only = head_only
        self._conn: _Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._reused = False
        self._done = False

    def start(self) -> None:
        conn = self._pool.take_idle()
        if conn is not None:
            self._send(conn, reused=True)
        else:
            self._task = asyncio.get_running_loop().create_task(self._connect_and_send())

    async def _connect_and_send(self) -> None:
        try:
            conn = await self._pool.connect()
        except UpstreamError as exc:
            self._task = None
            self.fail(exc)
            return
        self._task = None
        if self._done:
            conn.close()
            return
        self._send(conn, reused=False)

    def _send(self, conn: _Connection, *, reused: bool) -> None:
        self._conn = conn
        self._reused = reused
        conn.start(self)

    # called by the connection

    def stale(self, conn: _Connection) -> None:
        self._conn = None
        if self._done:
            return
        if not self._reused:
            self.fail(UpstreamError("worker closed the connection"))
            return
        self._task = asyncio.get_running_loop().create_task(self._connect_and_send())

    def finished(self, conn: _Connection, *, keep: bool) -> None:
        self._conn = None
        if keep and not conn.closed:
            self._pool.release(conn)
        else:
            conn.close()
        if not self._done:
            self._done = True
            self.sink.upstream_done()

    def fail(self, error: UpstreamError) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.exchange = None
            conn.close()
        if not self._done:
            self._done = True
            self.sink.upstream_failed(error)

    # called by the client's side

    def pause_reading(self) -> None:
        if self._conn is not None:
            self._conn.pause_reading()

    def resume_reading(self) -> None:
        if self._conn is not None:
            self._conn.resume_reading()

    def abort(self) -> None:
        """Give the exchange up, without telling the sink."""
        self._done = True
        if self._task is not None:
            self._task.cancel()
            self._task = None
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.exchange = None
            conn.close()


class UpstreamPool:
    """Connections to one upstream: a worker's Unix socket ``path``, or, with
    ``tcp``, another host's balancer (several hosts, one cluster)."""

    def __init__(self, path: str, *, connect_timeout_s: float, read_timeout_s: float,
                 tcp: tuple[str, int] | None = None) -> None:
        self.path = path
        self.tcp = tcp
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self._idle: collections.deque[_Connection] = collections.deque()
        self._closed = False

    async def connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                if self.tcp is not None:
                    _, conn = await loop.create_connection(lambda: _Connection(self), *self.tcp)
                else:
                    _, conn = await loop.create_unix_connection(lambda: _Connection(self),
                                                                self.path)
        except (OSError, TimeoutError) as exc:
            raise UpstreamUnreachable(f"cannot connect to {self.path}: {exc!r}") from None
        return conn

    def reap(self, now: float) -> None:
        """Close connections idle too long, oldest first (the worker closes its
        side after its keep-alive timeout; ours must not linger after that)."""
        while self._idle and now - self._idle[0].idle_since > IDLE_S:
            self._idle.popleft().close()

    def take_idle(self) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()  # most recently used first: warm and surely open
            if conn.closed:
                continue
            return conn
        return None

    def release(self, conn: _Connection) -> None:
        if self._closed:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)
        if time.monotonic() - self._idle[0].idle_since > IDLE_S:
            self.reap(conn.idle_since)

    def exchange(self, data: bytes, sink: Sink, *, head_only: bool = False) -> Exchange:
        """Send ``data`` (a whole request) and push the answer to ``sink``."""
        exchange = Exchange(self, data, sink, head_only)
        exchange.start()
        return exchange

    async def request(self, head: bytes, body: bytes) -> UpstreamResponse:
        """The whole answer to one request, in memory."""
        collector = _Collector()
        exchange = self.exchange(head + body, collector)
        try:
            return await asyncio.shield(collector.future)
        except asyncio.CancelledError:
            exchange.abort()
            raise

    def close(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop().close()


class _Collector:
    def __init__(self) -> None:
        self.future: asyncio.Future[UpstreamResponse] = asyncio.get_running_loop().create_future()
        self._head: tuple[int, str, list[tuple[str, str]]] = (0, "", [])
        self._body = bytearray()

    def upstream_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]],
                      length: int | None, chunked: bool) -> None:
        self._head = (status, reason.decode("latin-1"),
                      [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers])

    def upstream_body(self, data: bytes) -> None:
        self._body += data

    def upstream_done(self) -> None:
        if not self.future.done():
            self.future.set_result(UpstreamResponse(*self._head, bytes(self._body)))

    def upstream_failed(self, error: UpstreamError) -> None:
        if not self.future.done():
            self.future.set_exception(error)
