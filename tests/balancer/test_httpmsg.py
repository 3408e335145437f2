"""The request the balancer sends on, and its own answers (balancer/httpmsg.py).  Pure."""

from __future__ import annotations

from balancer.httpmsg import Request, json_error


def _request(method: bytes, url: bytes, headers: list[tuple[bytes, bytes]],
             body: bytes = b"") -> Request:
    req = Request()
    req.method, req.url, req.headers = method, url, headers
    req.body += body
    return req


def test_upstream_keeps_end_to_end_headers_and_reframes_the_body() -> None:
    req = _request(b"POST", b"/socket.io/?EIO=4&transport=polling&sid=x",
                   [(b"Host", b"example"), (b"Connection", b"keep-alive"),
                    (b"Transfer-Encoding", b"chunked"), (b"X-Forwarded-For", b"6.6.6.6"),
                    (b"Expect", b"100-continue"), (b"Cookie", b"a=1")], b"4:42[]")
    assert req.upstream([b"X-Forwarded-For: 1.2.3.4"]) == (
        b"POST /socket.io/?EIO=4&transport=polling&sid=x HTTP/1.1\r\n"
        b"Host: example\r\nCookie: a=1\r\nX-Forwarded-For: 1.2.3.4\r\n"
        b"Content-Length: 6\r\n\r\n4:42[]")


def test_upstream_frames_an_empty_post_but_not_a_get() -> None:
    assert b"Content-Length: 0" in _request(b"POST", b"/", []).upstream([])
    assert b"Content-Length" not in _request(b"GET", b"/", []).upstream([])


def test_upstream_drops_the_named_header_in_any_case() -> None:
    req = _request(b"GET", b"/", [(b"X-Siocluster-Forward", b"v1 forged"), (b"Host", b"h")])
    sent = req.upstream([b"x-siocluster-forward: v1 signed"], drop=b"x-siocluster-forward")
    assert sent == b"GET / HTTP/1.1\r\nHost: h\r\nx-siocluster-forward: v1 signed\r\n\r\n"


def test_header_lookup_and_websocket_detection() -> None:
    req = _request(b"GET", b"/", [(b"Upgrade", b" WebSocket "), (b"Host", b"h")])
    assert req.header(b"host") == b"h" and req.header(b"missing") is None
    assert req.is_websocket()
    assert not _request(b"GET", b"/", [(b"Upgrade", b"h2c")]).is_websocket()


def test_json_error_names_the_status_and_carries_extra_headers() -> None:
    answer = json_error(429, "too many", headers=((b"Retry-After", b"3"),), close=True)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b"\r\n") == [b"HTTP/1.1 429 Too Many Requests",
                                   b"Content-Type: application/json", b"Retry-After: 3",
                                   b"Content-Length: 36", b"Connection: close"]
    assert body == b'{"code": 429, "message": "too many"}'


def test_replay_keeps_the_client_headers_and_reframes_a_chunked_body() -> None:
    req = Request()
    req.method, req.url, req.version = b"POST", b"/socket.io/?sid=x", "1.1"
    req.headers = [(b"Host", b"a"), (b"Transfer-Encoding", b"chunked"),
                   (b"X-Forwarded-For", b"198.51.100.7"), (b"Expect", b"100-continue")]
    req.chunked = True
    req.body = bytearray(b"4:hello")
    assert req.replay() == (b"POST /socket.io/?sid=x HTTP/1.1\r\nHost: a\r\n"
                            b"X-Forwarded-For: 198.51.100.7\r\nContent-Length: 7\r\n\r\n4:hello")


def test_replay_of_a_get_adds_no_framing_and_keeps_its_version() -> None:
    req = Request()
    req.method, req.url, req.version = b"GET", b"/x", "1.0"
    req.headers = [(b"Connection", b"keep-alive")]
    assert req.replay() == b"GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"


def test_replay_of_an_upgrade_carries_the_bytes_after_its_head() -> None:
    req = Request()
    req.method, req.url = b"GET", b"/socket.io/?transport=websocket"
    req.headers = [(b"Upgrade", b"websocket")]
    req.upgrade = True
    req.rest = b"\x81\x05hello"
    assert req.replay() == req.head() + b"\x81\x05hello"
