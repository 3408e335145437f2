"""The pure side of requests and acks: socket descriptions and ack replies.  No sockets."""

from __future__ import annotations

import msgspec
import pytest

from worker.adapter.calls import (
    Handshake,
    SocketDescription,
    SocketInfo,
    describe,
    flatten_acks,
    received_socket,
    socket_info,
)
from worker.adapter.envelope import Codec, Envelope, MsgType, parse, serialize

ENVIRON = {
    "HTTP_USER_AGENT": "test/1", "HTTP_X_TRACE_ID": "abc", "HTTP_BAD": b"bytes",
    "QUERY_STRING": "EIO=4&transport=websocket&token=t", "REMOTE_ADDR": "10.0.0.7",
    "wsgi.url_scheme": "https", "asgi.scope": {},
}
HANDSHAKE = {
    "headers": {"user-agent": "test/1", "x-trace-id": "abc"},
    "query": {"EIO": "4", "transport": "websocket", "token": "t"},
    "address": "10.0.0.7",
    "secure": True,
    "auth": {"token": "x", "blob": b"\x00\x01"},
}


def test_describe_reports_headers_query_address_and_auth() -> None:
    desc = describe("sid1", ["sid1", "red"], ENVIRON, {"token": "x", "blob": b"\x00\x01"})
    assert desc == SocketDescription("sid1", ["sid1", "red"], Handshake(**HANDSHAKE))
    assert describe("s", [], {}, None).handshake == Handshake({}, {}, None, False, None)


def test_a_description_comes_back_as_socket_info() -> None:
    desc = describe("sid1", ["sid1", 7], ENVIRON, {"token": "x", "blob": b"\x00\x01"})
    info = socket_info(desc, "/chat", "1.2")
    assert info == SocketInfo("sid1", "/chat", ("sid1", 7), HANDSHAKE, "1.2")


@pytest.mark.parametrize("codec", [Codec.MSGPACK, Codec.JSON])
def test_a_description_survives_the_wire_bytes_included(codec: Codec) -> None:
    desc = describe("sid1", ["sid1", 7], ENVIRON, {"token": "x", "blob": b"\x00\x01"})
    sent = msgspec.to_builtins(desc, builtin_types=(bytes, bytearray, memoryview))
    frame = serialize(Envelope(MsgType.FETCH_RESP, "0.1", "/", [sent], to="1.2", rid=1), codec)
    [raw] = parse(frame).data
    assert received_socket(raw, "/chat", "0.1") == SocketInfo(
        "sid1", "/chat", ("sid1", 7), HANDSHAKE, "0.1")


@pytest.mark.parametrize("codec", [Codec.MSGPACK, Codec.JSON])
def test_a_session_travels_with_its_description(codec: Codec) -> None:
    data = {"user": "ann", "roles": ["a", "b"], "n": 3}
    desc = describe("sid1", ["sid1"], ENVIRON, None, data)
    sent = msgspec.to_builtins(desc, builtin_types=(bytes, bytearray, memoryview))
    frame = serialize(Envelope(MsgType.FETCH_RESP, "0.1", "/", [sent], to="1.2", rid=1), codec)
    [raw] = parse(frame).data
    assert received_socket(raw, "/", "0.1").data == data
    # A worker of an earlier release sends no session: it reads as None.
    del sent["data"]
    assert received_socket(sent, "/", "0.1").data is None


def test_a_malformed_description_from_a_peer_is_refused() -> None:
    good = msgspec.to_builtins(describe("s", [], {}, None))
    for bad in ({"id": "x"}, None, 5, {**good, "rooms": "red"},
                {**good, "handshake": {**good["handshake"], "secure": "yes"}}):
        with pytest.raises(msgspec.ValidationError):
            received_socket(bad, "/", "1.2")


def test_acks_keep_only_workers_that_had_a_handler() -> None:
    assert flatten_acks({"0.1": [True, 1], "1.2": [False, None], "2.3": [True, None]}) == [
        1, None]
    assert flatten_acks({}) == []
