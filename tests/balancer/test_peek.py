from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from balancer.peek import HANDSHAKE, NEED_MORE, PLAIN, Upgrade, classify_head
from balancer.routing import extract_sid

UPGRADE = (b"GET /socket.io/?EIO=4&transport=websocket&sid=0.1.abc HTTP/1.1\r\n"
           b"Host: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
           b"Sec-WebSocket-Key: k\r\n\r\n")


def test_upgrade_with_sid() -> None:
    assert classify_head(UPGRADE) == Upgrade(sid="0.1.abc", path="/socket.io/")


def test_upgrade_without_sid_is_a_new_session() -> None:
    head = UPGRADE.replace(b"&sid=0.1.abc", b"")
    assert classify_head(head) == Upgrade(sid=None, path="/socket.io/")


def test_partial_head_needs_more_until_complete() -> None:
    for cut in (1, 3, 10, len(UPGRADE) - 1):
        assert classify_head(UPGRADE[:cut]) in (NEED_MORE, PLAIN)
    assert classify_head(UPGRADE[:20]) is NEED_MORE
    assert classify_head(UPGRADE[:20], complete=True) is PLAIN


def test_everything_else_is_plain() -> None:
    assert classify_head(b"POST /socket.io/ HTTP/1.1\r\n") is PLAIN
    assert classify_head(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") is PLAIN
    assert classify_head(UPGRADE.replace(b"Connection: keep-alive, Upgrade",
                                         b"Connection: keep-alive")) is PLAIN
    assert classify_head(b"GET /\xff HTTP/1.1\r\nUpgrade: websocket\r\n"
                         b"Connection: upgrade\r\n\r\n") is PLAIN
    assert classify_head(b"\x16\x03\x01\x02\x00") is PLAIN  # a TLS ClientHello


@given(st.binary(max_size=600))
def test_never_raises(data: bytes) -> None:
    classify_head(data)
    classify_head(data, complete=True)
    classify_head(b"GET " + data)
    classify_head(b"GET /?sid=" + data + b" HTTP/1.1\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\n\r\n")


def test_an_upgrade_claiming_to_be_forwarded_is_marked() -> None:
    from balancer.peek import Upgrade, classify_head

    head = (b"GET /socket.io/?EIO=4&transport=websocket&sid=h2-0.1.abcdefghijklmnopqrst "
            b"HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n")
    plain = classify_head(head + b"\r\n")
    assert isinstance(plain, Upgrade) and not plain.forwarded
    claimed = classify_head(head + b"X-Siocluster-Forward: v1 h2 1 1.2.3.4 1 00\r\n\r\n")
    assert isinstance(claimed, Upgrade) and claimed.forwarded


HANDSHAKE_HEAD = (b"GET /socket.io/?EIO=4&transport=polling&t=abc HTTP/1.1\r\n"
                  b"Host: x\r\nAccept: */*\r\n\r\n")


def test_a_plain_polling_handshake_is_told_when_asked() -> None:
    assert classify_head(HANDSHAKE_HEAD, handshake_path=b"/socket.io/") is HANDSHAKE
    assert classify_head(HANDSHAKE_HEAD) is PLAIN  # not asked: as before
    keep_alive = HANDSHAKE_HEAD.replace(b"Host: x", b"Host: x\r\nConnection: keep-alive")
    assert classify_head(keep_alive, handshake_path=b"/socket.io/") is HANDSHAKE
    bare = b"GET /socket.io/ HTTP/1.1\r\nHost: x\r\n\r\n"
    assert classify_head(bare, handshake_path=b"/socket.io/") is HANDSHAKE


def test_anything_less_plain_than_a_handshake_is_parsed_in_the_master() -> None:
    path = b"/socket.io/"
    for head in (
        HANDSHAKE_HEAD.replace(b"&t=abc", b"&sid=0.1.abc"),  # a session's request
        HANDSHAKE_HEAD.replace(b"&t=abc", b"&sid="),
        HANDSHAKE_HEAD.replace(b"/socket.io/", b"/socket.io/x"),  # another path
        HANDSHAKE_HEAD.replace(b"/socket.io/", b"/socket.io"),
        HANDSHAKE_HEAD.replace(b"/socket.io/", b"/app"),
        HANDSHAKE_HEAD.replace(b"HTTP/1.1", b"HTTP/1.0"),  # not kept alive
        HANDSHAKE_HEAD.replace(b"Host: x", b"Host: x\r\nConnection: close"),
        HANDSHAKE_HEAD.replace(b"Host: x", b"Host: x\r\nConnection: keep-alive, close"),
        HANDSHAKE_HEAD.replace(b"Host: x", b"Host: x\r\nContent-Length: 3"),  # a body
        HANDSHAKE_HEAD.replace(b"Host: x", b"Host: x\r\nTransfer-Encoding: chunked"),
        HANDSHAKE_HEAD.replace(b"Host: x", b"Host : x"),  # llhttp refuses this one
        HANDSHAKE_HEAD.replace(b"Host: x", b"Host: x\r\nUpgrade: h2c"),
        HANDSHAKE_HEAD.replace(b"Host: x", b"Host: x\r\nX-Siocluster-Forward: v1 x"),
        HANDSHAKE_HEAD.replace(b"&t=abc", b"&t=\xff"),
        HANDSHAKE_HEAD.replace(b"GET", b"POST"),
    ):
        assert classify_head(head, handshake_path=path) is PLAIN, head


def test_a_handshake_upgrade_is_still_an_upgrade() -> None:
    head = UPGRADE.replace(b"&sid=0.1.abc", b"")
    assert classify_head(head, handshake_path=b"/socket.io/") == Upgrade(sid=None,
                                                                         path="/socket.io/")


@given(st.binary(max_size=300))
def test_a_handshake_names_no_sid_under_any_target(target: bytes) -> None:
    head = b"GET /socket.io/" + target.replace(b" ", b"").replace(b"\r", b"").replace(
        b"\n", b"") + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    if classify_head(head, handshake_path=b"/socket.io/") is HANDSHAKE:
        query = head.split(b" ")[1].partition(b"?")[2].decode("ascii")
        assert extract_sid(query) is None
