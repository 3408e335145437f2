"""The answer the master relays, framed for its client.  Pure.

A worker's (or another host's) answer arrives as a head, body parts and an
end (:class:`balancer.upstream.Sink`); :class:`Answer` turns them into the
bytes for the client: the head without the worker's hop-by-hop headers, the
body by Content-Length, chunked (an HTTP/1.1 client, no length) or ended by
the close (HTTP/1.0), coalesced into one write when it fits
:data:`COALESCE`.
"""

from __future__ import annotations

from .httpmsg import Request, response_head

__all__ = ["COALESCE", "Answer"]

# An answer is written once when it fits this; larger ones are streamed.
COALESCE = 64 * 1024


class Answer:
    __slots__ = ("_out", "_size", "chunked", "close", "sent")

    def __init__(self) -> None:
        self._out: list[bytes] = []
        self._size = 0
        self.sent = False  # some of it was written: a failure now can only close
        self.chunked = False
        self.close = False  # close the connection after it

    def reset(self, *, close: bool) -> None:
        self._out = []
        self._size = 0
        self.sent = False
        self.chunked = False
        self.close = close

    def clear(self) -> None:
        self._out.clear()
        self._size = 0

    def head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]],
             length: int | None, req: Request | None) -> None:
        extra: list[bytes] = []
        if length is not None:
            extra.append(b"Content-Length: %d" % length)
        elif status in (204, 304) or status < 200 or (req is not None and req.method == b"HEAD"):
            pass  # no body
        elif req is not None and req.version == "1.1":
            extra.append(b"Transfer-Encoding: chunked")
            self.chunked = True
        else:
            self.close = True  # an HTTP/1.0 client: the close ends the body
        self._out.append(response_head(status, reason, headers, extra, close=self.close))

    def body(self, data: bytes) -> bytes | None:
        """Take a body part; the bytes to write now, if the answer outgrew :data:`COALESCE`."""
        if self.chunked:
            self._out.append(b"%x\r\n" % len(data))
            self._out.append(data)
            self._out.append(b"\r\n")
        else:
            self._out.append(data)
        self._size += len(data)
        if self._size <= COALESCE:
            return None
        ready = b"".join(self._out)
        self.clear()
        self.sent = True
        return ready

    def end(self) -> bytes:
        """The rest of the answer, to write now."""
        if self.chunked:
            self._out.append(b"0\r\n\r\n")
        ready = b"".join(self._out)
        self.clear()
        return ready
