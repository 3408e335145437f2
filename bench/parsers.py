"""The parse cost per message of the master's HTTP layer: httptools against h11.

Issue 14 asked for whichever of the two measures better.  This times, in one
process, a typical Engine.IO polling POST (head and body) and a worker's
answer, through httptools' parsers (llhttp, in C) and through h11 (pure
Python, a whole request/answer cycle, as a server or client would run it).
Not part of ``python -m bench``; run it by hand::

    python -m bench.parsers
"""

from __future__ import annotations

import time

import h11
import httptools

__all__ = ["main"]

REQUEST = (b"POST /socket.io/?EIO=4&transport=polling&sid=0.1.AbCdEfGhIjKlMnOp HTTP/1.1\r\n"
           b"Host: 127.0.0.1:8000\r\nUser-Agent: Python/3.11 aiohttp/3.14.5\r\nAccept: */*\r\n"
           b"Accept-Encoding: gzip, deflate\r\nContent-Type: text/plain;charset=UTF-8\r\n"
           b"Content-Length: 84\r\n\r\n" + b"4" + b"2" * 83)
ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=UTF-8\r\nContent-Length: 2\r\n"
          b"Date: Mon, 30 Nov 2026 18:00:00 GMT\r\nServer: Python/3.11 aiohttp/3.14.5\r\n\r\nok")
N = 50_000


class _Callbacks:
    """What balancer/front.py and balancer/upstream.py keep of a message."""

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.url = b""
        self.body = b""

    def on_message_begin(self) -> None:
        self.headers, self.url, self.body = [], b"", b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body += body


def _per_message_us(started: float, n: int) -> float:
    return (time.perf_counter() - started) / n * 1e6


def httptools_request() -> float:
    parser = httptools.HttpRequestParser(_Callbacks())
    started = time.perf_counter()
    for _ in range(N):
        parser.feed_data(REQUEST)
    return _per_message_us(started, N)


def httptools_answer() -> float:
    parser = httptools.HttpResponseParser(_Callbacks())
    started = time.perf_counter()
    for _ in range(N):
        parser.feed_data(ANSWER)
    return _per_message_us(started, N)


def h11_request() -> float:
    conn = h11.Connection(h11.SERVER)
    started = time.perf_counter()
    for _ in range(N):
        conn.receive_data(REQUEST)
        while not isinstance(conn.next_event(), h11.EndOfMessage):
            pass
        conn.send(h11.Response(status_code=200, headers=[("Content-Length", "2")]))
        conn.send(h11.Data(data=b"ok"))
        conn.send(h11.EndOfMessage())
        conn.start_next_cycle()
    return _per_message_us(started, N)


def h11_answer() -> float:
    n = N // 5
    started = time.perf_counter()
    for _ in range(n):
        conn = h11.Connection(h11.CLIENT)
        conn.send(h11.Request(method="GET", target="/", headers=[("Host", "w")]))
        conn.send(h11.EndOfMessage())
        conn.receive_data(ANSWER)
        while not isinstance(conn.next_event(), h11.EndOfMessage):
            pass
    return _per_message_us(started, n)


def main() -> None:
    for r in range(3):
        print(f"round {r}: httptools request {httptools_request():.2f} us, "
              f"answer {httptools_answer():.2f} us | h11 request cycle {h11_request():.2f} us, "
              f"answer cycle {h11_answer():.2f} us")


if __name__ == "__main__":
    main()
