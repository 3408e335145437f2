"""A lean, streaming HTTP/1.1 client for requests to a worker's Unix socket.

The balancer's hot path (long-polling, and the app's own small requests) sends
every request it proxies through this client: its connections are
:class:`balancer.upstream_conn.UpstreamConnection` Protocols with httptools' (llhttp's)
response parser, the parser uvicorn uses, and there are no
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

from .exceptions import UpstreamError, UpstreamUnreachable
from .upstream_conn import UpstreamConnection

__all__ = ["IDLE_S", "Exchange", "Sink", "UpstreamPool", "UpstreamResponse"]

# Idle pooled connections are closed after this long.  Under load they are
# reused within milliseconds; after a burst, the pool shrinks back (each one is
# a descriptor in the master and in a worker), well before aiohttp's server in
# the worker would close them (75 s).
IDLE_S = 5.0


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
        self._conn: UpstreamConnection | None = None
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

    def _send(self, conn: UpstreamConnection, *, reused: bool) -> None:
        self._conn = conn
        self._reused = reused
        conn.start(self)

    # called by the connection

    def stale(self, conn: UpstreamConnection) -> None:
        self._conn = None
        if self._done:
            return
        if not self._reused:
            self.fail(UpstreamError("worker closed the connection"))
            return
        self._task = asyncio.get_running_loop().create_task(self._connect_and_send())

    def finished(self, conn: UpstreamConnection, *, keep: bool) -> None:
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
        self._idle: collections.deque[UpstreamConnection] = collections.deque()
        self._closed = False

    async def connect(self) -> UpstreamConnection:
        loop = asyncio.get_running_loop()

        def protocol() -> UpstreamConnection:
            return UpstreamConnection(self.read_timeout_s)

        try:
            async with asyncio.timeout(self.connect_timeout_s):
                if self.tcp is not None:
                    _, conn = await loop.create_connection(protocol, *self.tcp)
                else:
                    _, conn = await loop.create_unix_connection(protocol, self.path)
        except (OSError, TimeoutError) as exc:
            raise UpstreamUnreachable(f"cannot connect to {self.path}: {exc!r}") from None
        return conn

    def reap(self, now: float) -> None:
        """Close connections idle too long, oldest first (the worker closes its
        side after its keep-alive timeout; ours must not linger after that)."""
        while self._idle and now - self._idle[0].idle_since > IDLE_S:
            self._idle.popleft().close()

    def take_idle(self) -> UpstreamConnection | None:
        while self._idle:
            conn = self._idle.pop()  # most recently used first: warm and surely open
            if conn.closed:
                continue
            return conn
        return None

    def release(self, conn: UpstreamConnection) -> None:
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
