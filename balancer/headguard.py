"""``header_timeout_s`` for every request head on a keep-alive connection.

The front door bounds the first head of a connection while it peeks.  A
keep-alive connection served by aiohttp could then trickle its *next* head
forever (slowloris).  :class:`HeadTracker` follows the request framing of the
bytes a client sends, just enough to know when a head is in progress: a head
runs to the blank line; a Content-Length body is counted down; a chunked
body is followed chunk by chunk to its last chunk and trailers; after that
the next byte starts a new head.  It gives up (stops guarding) on upgrades
(the bytes after them are not HTTP) and on framing aiohttp will refuse
anyway (a bad Content-Length or chunk size: aiohttp answers 400 and closes).
Pure: no I/O, no clock.

:class:`GuardedProtocol` wraps aiohttp's protocol and arms a timer while a
head is in progress; when it fires, the client gets 408 and the connection is
closed.

It also answers a client that half-closes (sends FIN) after a whole request:
aiohttp closes the transport on EOF, so the answer would be lost.  When the
framing says every request has fully arrived, the protocol keeps its write
side open and has aiohttp finish the way its own server shuts a connection
down: ``close()`` (take no new request; wake the idle wait for one), then
``shutdown(drain_s)`` (wait up to :data:`HALF_CLOSE_DRAIN_S` for a request in
flight to be answered, then close the transport).  A FIN cannot tell a
half-close from a client that is gone; the bound keeps the second from
holding a descriptor for a whole long-poll (nginx drops both at once, 499).
Whether a request is in flight or not, the connection ends: the common case
is every client that closes a kept-alive connection between requests.
(``close()`` alone is *not* enough: on an idle connection it cancels the
wait for the next request and leaves the transport open for ever, in
CLOSE-WAIT; ``shutdown()`` alone waits for a next request that never
comes.)  Mid-head, mid-body or after an upgrade, EOF still closes at once.
"""

from __future__ import annotations

import asyncio
import enum
from typing import Any

__all__ = ["HALF_CLOSE_DRAIN_S", "RESPONSE_408", "GuardedProtocol", "HeadTracker", "Phase"]

# How long a request in flight when its client sent FIN may take to be answered.
HALF_CLOSE_DRAIN_S = 5.0


class Phase(enum.Enum):
    IDLE = "idle"  # between requests
    HEAD = "head"  # a head has begun and not ended
    BODY = "body"  # counting down a Content-Length body
    OFF = "off"  # not HTTP we follow any more: no guarding


class _Chunked(enum.Enum):
    SIZE = "size"  # a chunk-size line
    DATA = "data"  # counting a chunk's bytes down
    DATA_END = "data end"  # the empty line after a chunk's bytes
    TRAILER = "trailer"  # trailer lines after the last chunk, to an empty one


# A chunk-size or trailer line longer than this is not one aiohttp accepts.
_MAX_LINE = 8192


class HeadTracker:
    def __init__(self) -> None:
        self.phase = Phase.IDLE
        self._head = bytearray()
        self._remaining = 0
        self._chunked: _Chunked | None = None  # None: a Content-Length body
        self._line = bytearray()

    def feed(self, data: bytes) -> Phase:
        """Account for ``data``; return the phase after it."""
        view = memoryview(data)
        while view and self.phase is not Phase.OFF:
            if self.phase is Phase.BODY:
                if self._chunked is not None:
                    view = self._feed_chunked(view)
                    continue
                taken = min(self._remaining, len(view))
                self._remaining -= taken
                view = view[taken:]
                if not self._remaining:
                    self.phase = Phase.IDLE
                continue
            # IDLE or HEAD: accumulate until the blank line.
            self.phase = Phase.HEAD
            start = max(0, len(self._head) - 3)
            self._head += view
            end = self._head.find(b"\r\n\r\n", start)
            if end < 0:
                return self.phase
            rest = bytes(self._head[end + 4 :])
            self._finish_head(bytes(self._head[:end]))
            self._head.clear()
            view = memoryview(rest)
        return self.phase

    def _finish_head(self, head: bytes) -> None:
        length = 0
        chunked = False
        for line in head.lower().split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip()
            if name == b"upgrade":
                self.phase = Phase.OFF
                return
            if name == b"transfer-encoding":
                # Only a final "chunked" frames the body; anything else aiohttp refuses.
                if value.split(b",")[-1].strip() != b"chunked":
                    self.phase = Phase.OFF
                    return
                chunked = True
            elif name == b"content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    self.phase = Phase.OFF  # aiohttp answers 400
                    return
        if chunked:
            self._chunked, self.phase = _Chunked.SIZE, Phase.BODY
            return
        self._remaining = length
        self.phase = Phase.BODY if length else Phase.IDLE

    def _feed_chunked(self, view: memoryview) -> memoryview:
        """Follow a chunked body through ``view``; return what is left after it."""
        while view and self.phase is Phase.BODY:
            if self._chunked is _Chunked.DATA:
                taken = min(self._remaining, len(view))
                self._remaining -= taken
                view = view[taken:]
                if not self._remaining:
                    self._chunked = _Chunked.DATA_END
                continue
            end = bytes(view[:_MAX_LINE]).find(b"\n")
            if end < 0:
                self._line += view
                if len(self._line) > _MAX_LINE:
                    self.phase = Phase.OFF
                return memoryview(b"")
            self._line += view[: end + 1]
            view = view[end + 1 :]
            line = bytes(self._line).rstrip(b"\r\n")
            self._line.clear()
            self._end_of_line(line)
        return view

    def _end_of_line(self, line: bytes) -> None:
        if self._chunked is _Chunked.SIZE:
            size = line.partition(b";")[0].strip()
            if not size or size.strip(b"0123456789abcdefABCDEF") or len(size) > 16:
                self.phase = Phase.OFF  # aiohttp answers 400
                return
            self._remaining = int(size, 16)
            self._chunked = _Chunked.DATA if self._remaining else _Chunked.TRAILER
        elif self._chunked is _Chunked.DATA_END:
            if line:
                self.phase = Phase.OFF
                return
            self._chunked = _Chunked.SIZE
        elif not line:  # TRAILER: the empty line ends the body
            self._chunked, self.phase = None, Phase.IDLE


class GuardedProtocol(asyncio.Protocol):
    """Passes everything to aiohttp's protocol, and times the heads it sees."""

    def __init__(self, inner: Any, timeout_s: float, on_timeout: Any,
                 drain_s: float = HALF_CLOSE_DRAIN_S) -> None:
        """``timeout_s`` 0: heads are not timed (half-closes are still answered).
        ``drain_s``: how long a request in flight at a half-close may take to answer."""
        self._inner = inner
        self._timeout_s = timeout_s
        self._on_timeout = on_timeout
        self._drain_s = drain_s
        self._tracker = HeadTracker()
        self._timer: asyncio.TimerHandle | None = None
        self._transport: Any = None
        self._closing: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # uvloop's transports are not asyncio.Transport subclasses
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        phase = self._tracker.feed(data)
        if phase is Phase.HEAD:
            if self._timer is None and self._timeout_s:
                loop = asyncio.get_running_loop()
                self._timer = loop.call_later(self._timeout_s, self._expired)
        elif self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._inner.data_received(data)

    def _expired(self) -> None:
        self._timer = None
        if self._transport is not None and not self._transport.is_closing():
            self._on_timeout()
            self._transport.write(RESPONSE_408)
            self._transport.close()

    def eof_received(self) -> bool | None:
        if self._tracker.phase is Phase.IDLE:
            # Every request has arrived: answer them, then close (see the docstring).
            if self._closing is None:
                loop = asyncio.get_running_loop()
                self._inner.close()
                self._closing = loop.create_task(self._inner.shutdown(self._drain_s))
            return True
        result: bool | None = self._inner.eof_received()
        return result

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


_BODY_408 = b'{"code":408,"message":"request head too slow"}'
RESPONSE_408 = (
    b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
    + f"Content-Length: {len(_BODY_408)}\r\nConnection: close\r\n\r\n".encode()
    + _BODY_408
)
