"""The pure side of requests and acks: socket descriptions and ack replies.  No sockets."""

from __future__ import annotations

import pytest

from worker.adapter.calls import SocketInfo, describe, flatten_acks, socket_info

ENVIRON = {
    "HTTP_USER_AGENT": "test/1", "HTTP_X_TRACE_ID": "abc", "HTTP_BAD": b"bytes",
    "QUERY_STRING": "EIO=4&transport=websocket&token=t", "REMOTE_ADDR": "10.0.0.7",
    "wsgi.url_scheme": "https", "asgi.scope": {},
}


def test_describe_reports_headers_query_address_and_auth() -> None:
    raw = describe("sid1", ["sid1", "red"], ENVIRON, {"token": "x"})
    assert raw == {
        "id": "sid1",
        "rooms": ["sid1", "red"],
        "handshake": {
            "headers": {"user-agent": "test/1", "x-trace-id": "abc"},
            "query": {"EIO": "4", "transport": "websocket", "token": "t"},
            "address": "10.0.0.7",
            "secure": True,
            "auth": {"token": "x"},
        },
    }
    assert describe("s", [], {}, None)["handshake"] == {
        "headers": {}, "query": {}, "address": None, "secure": False, "auth": None}


def test_a_description_comes_back_as_socket_info() -> None:
    raw = describe("sid1", ["sid1", "red"], ENVIRON, None)
    info = socket_info(raw, "/chat", "1.2")
    assert info == SocketInfo("sid1", "/chat", ("sid1", "red"), raw["handshake"], "1.2")
    for bad in ({"id": "x"}, None, 5):
        with pytest.raises((KeyError, TypeError)):
            socket_info(bad, "/", "1.2")


def test_acks_keep_only_workers_that_had_a_handler() -> None:
    assert flatten_acks({"0.1": [True, 1], "1.2": [False, None], "2.3": [True, None]}) == [
        1, None]
    assert flatten_acks({}) == []
