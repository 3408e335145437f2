from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from balancer.headguard import HeadTracker, Phase

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


def test_chunked_and_upgrades_turn_it_off() -> None:
    t = HeadTracker()
    assert t.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n") is Phase.OFF
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
