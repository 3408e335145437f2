from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from balancer.headguard import GuardedProtocol, HeadTracker, Phase

GET = b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n"
POST = b"POST /socket.io/?sid=a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"


def test_whole_requests_leave_it_idle() -> None:
    t = HeadTracker()
    assert t.feed(GET) is Phase.IDLE
    assert t.feed(POST + b"hello") is Phase.IDLE
    assert t.feed(GET + POST + b"hello" + GET) is Phase.IDLE


def test_a_trickled_head_is_in_progress_until_the_blank_line() -> None:
    t = HeadTracker()
    assert t.feed(GET) is Phase.IDLE
    for i in range(len(GET) - 1):
        assert t.feed(GET[i:i + 1]) is Phase.HEAD
    assert t.feed(GET[-1:]) is Phase.IDLE


def test_body_bytes_are_not_a_head() -> None:
    t = HeadTracker()
    assert t.feed(POST) is Phase.BODY
    assert t.feed(b"he") is Phase.BODY
    assert t.feed(b"llo") is Phase.IDLE
    assert t.feed(b"G") is Phase.HEAD


def test_blank_line_split_across_packets() -> None:
    t = HeadTracker()
    assert t.feed(GET[:-2]) is Phase.HEAD
    assert t.feed(GET[-2:]) is Phase.IDLE


CHUNKED = (b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5\r\nhello\r\n1a;ext=1\r\n" + b"z" * 26 + b"\r\n0\r\nX-Trailer: t\r\n\r\n")


def test_chunked_bodies_are_followed_to_the_end() -> None:
    t = HeadTracker()
    assert t.feed(CHUNKED) is Phase.IDLE
    assert t.feed(CHUNKED + GET) is Phase.IDLE
    assert t.feed(CHUNKED[:-1]) is Phase.BODY  # not a head: no timer mid-body
    assert t.feed(CHUNKED[-1:]) is Phase.IDLE
    assert t.feed(b"G") is Phase.HEAD  # the next head is timed again


@given(st.lists(st.integers(1, len(CHUNKED + GET) - 1), max_size=12))
def test_chunked_split_anywhere_ends_the_same(cuts: list[int]) -> None:
    data = CHUNKED + GET + POST + b"hello"
    t = HeadTracker()
    last = 0
    for cut in sorted(set(cuts)):
        phase = t.feed(data[last:cut])
        assert phase is not Phase.OFF
        last = cut
    assert t.feed(data[last:]) is Phase.IDLE


def test_bad_chunking_and_upgrades_turn_it_off() -> None:
    for bad in (b"zz\r\n", b"5\r\nhelloXX", b"-1\r\n", b"1" * 20 + b"\r\n"):
        t = HeadTracker()
        assert t.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + bad
                      + b"\r\n") is Phase.OFF, bad
    t = HeadTracker()
    assert t.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n") is Phase.OFF
    t = HeadTracker()
    assert t.feed(b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
                  b"\x81\x85garbage") is Phase.OFF
    t = HeadTracker()
    assert t.feed(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n") is Phase.OFF


@given(st.lists(st.binary(max_size=200), max_size=20))
def test_never_raises(chunks: list[bytes]) -> None:
    t = HeadTracker()
    for chunk in chunks:
        t.feed(chunk)


class _Inner:
    """Stands in for aiohttp's RequestHandler: records what it is told."""

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.closed = False
        self.shut = False
        self.drain_s: float | None = None

    def connection_made(self, transport: Any) -> None:
        pass

    def data_received(self, data: bytes) -> None:
        self.data.append(data)

    def eof_received(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True

    async def shutdown(self, timeout: float | None = None) -> None:
        assert self.closed  # close() first, as aiohttp's own server does
        self.shut = True
        self.drain_s = timeout


def test_half_close_after_a_whole_request_keeps_the_write_side() -> None:
    async def main() -> None:
        inner = _Inner()
        guard = GuardedProtocol(inner, 0, lambda: None, drain_s=7.0)
        guard.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert guard.eof_received() is True
        assert guard.eof_received() is True  # a second EOF starts nothing new
        await asyncio.sleep(0)
        assert inner.shut and inner.drain_s == 7.0  # aiohttp answers, then closes

    asyncio.run(main())


def test_half_close_mid_request_closes_at_once() -> None:
    for partial in (b"GET / HTTP/1.1\r\nHo", b"POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\nab",
                    b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"):
        inner = _Inner()
        guard = GuardedProtocol(inner, 0, lambda: None)
        guard.data_received(partial)
        assert guard.eof_received() is None and not inner.closed
