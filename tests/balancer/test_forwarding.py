from __future__ import annotations

from balancer.forwarding import TrustedProxies, resolve_client
from balancer.proxy import forward_headers


def test_untrusted_peer_xff_is_ignored() -> None:
    trusted = TrustedProxies([])
    assert resolve_client("198.51.100.7", "203.0.113.1", trusted) == "198.51.100.7"


def test_trusted_proxy_chain_is_walked_from_the_right() -> None:
    trusted = TrustedProxies(["10.0.0.0/8", "127.0.0.1"])
    assert resolve_client("127.0.0.1", "203.0.113.1, 10.1.2.3", trusted) == "203.0.113.1"
    assert resolve_client("127.0.0.1", "6.6.6.6, 203.0.113.1", trusted) == "203.0.113.1"
    assert resolve_client("127.0.0.1", None, trusted) == "127.0.0.1"
    assert resolve_client("127.0.0.1", "not-an-ip", trusted) == "not-an-ip"
    assert resolve_client("192.0.2.9", "203.0.113.1", trusted) == "192.0.2.9"


def test_forward_headers_keep_host_and_drop_hop_by_hop() -> None:
    out = forward_headers(
        [("Host", "example.com"), ("Connection", "keep-alive"), ("Transfer-Encoding", "chunked"),
         ("X-Forwarded-For", "6.6.6.6"), ("Cookie", "a=1"), ("Cookie", "b=2")],
        "203.0.113.1", "https",
    )
    assert out["Host"] == "example.com"
    assert "Connection" not in out and "Transfer-Encoding" not in out
    assert out.getall("X-Forwarded-For") == ["203.0.113.1"]
    assert out["X-Forwarded-Proto"] == "https"
    assert out.getall("Cookie") == ["a=1", "b=2"]


def test_request_head() -> None:
    from balancer.forwarding import forwarded, request_head

    head = request_head("GET", "/socket.io/?sid=a", [(b"Host", b"x"), (b"X-Forwarded-For", b"6")],
                        drop=frozenset({b"x-forwarded-for"}), extra=forwarded("1.2.3.4", "http"))
    assert head == (b"GET /socket.io/?sid=a HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 1.2.3.4\r\n"
                    b"X-Forwarded-Proto: http\r\n\r\n")
