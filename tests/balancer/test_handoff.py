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


def test_a_passed_connection_round_trips_with_its_returns() -> None:
    from balancer.handoff import POLLING, RETURNED, Passed, decode_passed, encode_passed

    for kind in (POLLING, RETURNED):
        for peer in (None, ("203.0.113.9", 4711), ("2001:db8::1", 0)):
            for data in (b"", HEAD + b"\n\nbody"):
                payload = encode_passed(kind, data, peer, 2)
                assert decode_passed(payload) == Passed(kind, data, peer, 2)
                payload = encode_passed(kind, data, peer, 0, admitted=True)
                assert decode_passed(payload) == Passed(kind, data, peer, 0, True)


def test_a_plain_handoff_is_not_a_passed_connection() -> None:
    from balancer.handoff import decode_passed

    assert decode_passed(encode_handoff(HEAD, ("198.51.100.1", 1))) is None
    assert decode_passed(b"h") is None
    assert decode_passed(b"P- -\n") is None  # no returns field
    assert decode_passed(b"P- - x\n") is None
    assert decode_passed(b"P- - 0 b\n") is None


@given(st.binary(max_size=300))
def test_decode_passed_never_raises(payload: bytes) -> None:
    from balancer.handoff import decode_passed

    decode_passed(payload)
    decode_passed(b"P" + payload)
    decode_passed(b"R" + payload)
