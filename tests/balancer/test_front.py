"""The front door's response heads: what the client gets of a worker's answer.  Pure."""

from __future__ import annotations

from balancer.front import error_response, response_head


def test_response_head_drops_hop_by_hop_and_sets_the_framing() -> None:
    head = response_head(
        200, b"OK",
        [(b"Content-Type", b"text/plain"), (b"Connection", b"keep-alive"),
         (b"Transfer-Encoding", b"chunked"), (b"content-length", b"5"), (b"Keep-Alive", b"t=5"),
         (b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2")],
        [b"Content-Length: 2"], close=False,
    )
    assert head == (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nSet-Cookie: a=1\r\n"
                    b"Set-Cookie: b=2\r\nContent-Length: 2\r\n\r\n")


def test_response_head_says_when_the_connection_closes() -> None:
    head = response_head(204, b"No Content", [], [], close=True)
    assert head == b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"


def test_error_response_is_whole() -> None:
    answer = error_response(429, b'{"code":429}', headers=((b"Retry-After", b"1"),))
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b"\r\n") == [b"HTTP/1.1 429 Too Many Requests",
                                   b"Content-Type: application/json", b"Retry-After: 1",
                                   b"Content-Length: 12"]
    assert body == b'{"code":429}'
