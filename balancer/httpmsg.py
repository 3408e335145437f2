"""HTTP/1.1 messages as the master's front sees them: a parsed request, and the
answers it writes.  Pure: no sockets, no event loop.
"""

from __future__ import annotations

import json

__all__ = ["CONTINUE", "DROP_REQUEST", "Refused", "Request", "error_response", "json_error",
           "response_head"]

# Request headers the worker does not get from the client: hop-by-hop ones, the
# framing (the balancer sets Content-Length), the forwarded ones (the balancer
# sets them), and Expect (the balancer already answered 100-continue).
DROP_REQUEST = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
    b"trailer", b"transfer-encoding", b"upgrade", b"content-length", b"x-forwarded-for",
    b"x-forwarded-proto", b"expect",
})
# Request headers a replay drops: the framing (a replay sets Content-Length) and
# Expect (whoever replays it already answered 100-continue).
_DROP_REPLAY = frozenset({b"content-length", b"transfer-encoding", b"expect"})
# Response headers the client does not get from the worker.
_DROP_RESPONSE = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
    b"trailer", b"transfer-encoding", b"upgrade", b"content-length",
})
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_REASONS = {400: b"Bad Request", 403: b"Forbidden", 408: b"Request Timeout",
            413: b"Payload Too Large", 414: b"URI Too Long", 429: b"Too Many Requests",
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


def json_error(status: int, message: str, *, close: bool = False,
               headers: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    """``{"code": status, "message": message}`` as a whole response.  Pure."""
    body = json.dumps({"code": status, "message": message}).encode()
    return error_response(status, body, headers=headers, close=close)


class Refused(Exception):
    """A request over a limit: answered ``status`` and closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Request:
    """One request as parsed: its head, its whole body (or the start of one that
    is streamed), and what the parser learnt of its framing."""

    __slots__ = ("body", "chunked", "continue_", "forward_claim", "headers", "keep_alive",
                 "length", "method", "rest", "stream", "upgrade", "url", "version", "xff")

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
        # The first X-Siocluster-Forward: a claim to come from another host of the
        # cluster (balancer.hostforward), which only the master may verify.
        self.forward_claim: bytes | None = None

    def head(self) -> bytes:
        """The head as the client sent it (its headers as parsed)."""
        lines = [self.method + b" " + self.url + b" HTTP/" + self.version.encode() + b"\r\n"]
        lines += [n + b": " + v + b"\r\n" for n, v in self.headers]
        lines.append(b"\r\n")
        return b"".join(lines)

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower case), or None."""
        for n, v in self.headers:
            if n.lower() == name:
                return v
        return None

    def is_websocket(self) -> bool:
        value = self.header(b"upgrade")
        return value is not None and value.strip().lower() == b"websocket"

    def upstream(self, extra: list[bytes], drop: bytes = b"") -> bytes:
        """The whole request as the balancer sends it on, HTTP/1.1, framed by
        Content-Length: the client's end-to-end headers (without ``drop``), then
        the ``extra`` lines.  Pure."""
        body = bytes(self.body)
        head = [self.method + b" " + self.url + b" HTTP/1.1\r\n"]
        head += [n + b": " + v + b"\r\n" for n, v in self.headers
                 if (low := n.lower()) not in DROP_REQUEST and low != drop]
        head += [line + b"\r\n" for line in extra]
        if body or self.method in (b"POST", b"PUT", b"PATCH"):
            head.append(b"Content-Length: %d\r\n" % len(body))
        head.append(b"\r\n")
        return b"".join(head) + body

    def replay(self) -> bytes:
        """The request as the client sent it, for another server to parse again:
        its headers as parsed, but framed by Content-Length (a chunked body goes
        decoded) and without Expect; an upgrade with the bytes after its head.  Pure."""
        if self.upgrade:
            return self.head() + self.rest
        body = bytes(self.body)
        head = [self.method + b" " + self.url + b" HTTP/" + self.version.encode() + b"\r\n"]
        head += [n + b": " + v + b"\r\n" for n, v in self.headers
                 if n.lower() not in _DROP_REPLAY]
        if body or self.length is not None or self.chunked:
            head.append(b"Content-Length: %d\r\n" % len(body))
        head.append(b"\r\n")
        return b"".join(head) + body
