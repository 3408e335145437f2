"""A lean HTTP/1.1 client for Engine.IO requests to a worker's Unix socket.

Long-polling is the balancer's hot path, and aiohttp's ``ClientSession``
spends most of the proxy's CPU on generality this path does not need
(profiled: a third of the master's time under a polling load).  Engine.IO
requests are small, their bodies are already in memory, and python-engineio
answers them with a Content-Length, so this client:

* keeps a pool of idle keep-alive connections per worker generation, with no
  cap (a cap would queue long-polls behind each other);
* writes the request head and body in one write;
* reads the response head, then exactly Content-Length bytes (or a chunked
  body, decoded), within ``read_timeout_s``;
* retries once on a fresh connection when a pooled one turns out to be closed
  before any byte of the answer arrived (the worker never saw the request).

The app's own routes keep going through aiohttp's client, which streams.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass

from .exceptions import UpstreamError

__all__ = ["IDLE_S", "UpstreamPool", "UpstreamResponse"]

_MAX_HEAD = 64 * 1024
# Idle pooled connections are closed after this long.  Under load they are
# reused within milliseconds; after a burst, the pool shrinks back (each one is
# a descriptor in the master and in a worker), well before aiohttp's server in
# the worker would close them (75 s).
IDLE_S = 5.0


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(slots=True)
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float


def parse_head(head: bytes) -> tuple[int, str, list[tuple[str, str]], int | None, bool, bool]:
    """Status, reason, headers, content length, chunked, keep-alive.  Pure."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise UpstreamError(f"bad status line from worker: {lines[0][:80]!r}")
    headers: list[tuple[str, str]] = []
    length: int | None = None
    chunked = False
    keep_alive = parts[0] == "HTTP/1.1"
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            continue
        name, value = name.strip(), value.strip()
        low = name.lower()
        if low == "content-length":
            if not value.isdigit():
                raise UpstreamError("bad Content-Length from worker")
            length = int(value)
        elif low == "transfer-encoding":
            chunked = "chunked" in value.lower()
        elif low == "connection":
            token = value.lower()
            keep_alive = "close" not in token and (keep_alive or "keep-alive" in token)
        headers.append((name, value))
    return int(parts[1]), parts[2] if len(parts) > 2 else "", headers, length, chunked, keep_alive


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass  # trailers
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)


class UpstreamPool:
    def __init__(self, path: str, *, connect_timeout_s: float, read_timeout_s: float) -> None:
        self.path = path
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self._idle: collections.deque[_Conn] = collections.deque()
        self._closed = False

    async def _connect(self) -> _Conn:
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                reader, writer = await asyncio.open_unix_connection(self.path, limit=_MAX_HEAD)
        except (OSError, TimeoutError) as exc:
            raise UpstreamError(f"cannot connect to {self.path}: {exc!r}") from None
        return _Conn(reader, writer, 0.0)

    def reap(self, now: float) -> None:
        """Close connections idle too long, oldest first (the worker closes its
        side after its keep-alive timeout; ours must not linger after that)."""
        while self._idle and now - self._idle[0].idle_since > IDLE_S:
            self._idle.popleft().writer.close()

    def _take_idle(self) -> _Conn | None:
        now = time.monotonic()
        self.reap(now)
        while self._idle:
            conn = self._idle.pop()  # most recently used first: warm and surely open
            if conn.reader.at_eof() or conn.writer.is_closing() or now - conn.idle_since > IDLE_S:
                conn.writer.close()
                continue
            return conn
        return None

    async def request(self, head: bytes, body: bytes) -> UpstreamResponse:
        conn = self._take_idle()
        reused = conn is not None
        if conn is None:
            conn = await self._connect()
        try:
            return await self._exchange(conn, head, body)
        except _StaleConnection:
            if not reused:
                raise UpstreamError("worker closed the connection") from None
        try:
            return await self._exchange(await self._connect(), head, body)
        except _StaleConnection:  # a fresh connection reset too: the worker is gone
            raise UpstreamError("worker closed the connection") from None

    async def _exchange(self, conn: _Conn, head: bytes, body: bytes) -> UpstreamResponse:
        ok = False
        try:
            conn.writer.write(head + body if body else head)
            async with asyncio.timeout(self.read_timeout_s):
                try:
                    raw = await conn.reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError as exc:
                    if not exc.partial:
                        raise _StaleConnection from None
                    raise UpstreamError("worker closed the connection mid-answer") from None
                status, reason, headers, length, chunked, keep_alive = parse_head(raw[:-4])
                if chunked:
                    payload = await _read_chunked(conn.reader)
                elif length is not None:
                    payload = await conn.reader.readexactly(length) if length else b""
                else:
                    payload = await conn.reader.read()
                    keep_alive = False
            ok = keep_alive
            return UpstreamResponse(status, reason, headers, payload)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError) as exc:
            if isinstance(exc, ConnectionResetError | BrokenPipeError):
                raise _StaleConnection from None
            raise UpstreamError(f"worker answer unreadable: {exc!r}") from None
        except TimeoutError:
            raise UpstreamError("worker did not answer in time") from None
        finally:
            if ok and not self._closed:
                conn.idle_since = time.monotonic()
                self._idle.append(conn)
                self.reap(conn.idle_since)
            else:
                conn.writer.close()

    def close(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop().writer.close()


class _StaleConnection(Exception):
    """A pooled connection was closed before the worker read the request."""
