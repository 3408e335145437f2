from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from balancer.handoff import UNREAD, decode_handoff, encode_handoff

HEAD = b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\n\r\n"


def test_unread_head_from_the_peer_is_one_byte() -> None:
    assert encode_handoff(b"", None) == UNREAD == b"h"
    assert decode_handoff(b"h") == (b"", None)


def test_head_and_peer_round_trip() -> None:
    for head in (b"", HEAD):
        for peer in (None, ("203.0.113.9", 4711), ("2001:db8::1", 0)):
            if head or peer:
                assert decode_handoff(encode_handoff(head, peer)) == (head, peer)


def test_a_head_with_newlines_is_kept_whole() -> None:
    payload = encode_handoff(HEAD + b"\n\n", ("198.51.100.1", 1))
    assert decode_handoff(payload) == (HEAD + b"\n\n", ("198.51.100.1", 1))


@given(st.binary(max_size=300))
def test_never_raises(payload: bytes) -> None:
    decode_handoff(payload)
    decode_handoff(b"H" + payload)
