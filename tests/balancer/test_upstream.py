from __future__ import annotations

import pytest

from balancer.exceptions import UpstreamError
from balancer.upstream import parse_head


def test_parse_head() -> None:
    status, reason, headers, length, chunked, keep = parse_head(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n"
        b"Set-Cookie: a=1\r\nSet-Cookie: b=2")
    assert (status, reason, length, chunked, keep) == (200, "OK", 2, False, True)
    assert [v for k, v in headers if k == "Set-Cookie"] == ["a=1", "b=2"]
    assert parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked")[4] is True
    assert parse_head(b"HTTP/1.1 200 OK\r\nConnection: close")[5] is False
    assert parse_head(b"HTTP/1.0 200 OK")[5] is False
    assert parse_head(b"HTTP/1.0 200 OK\r\nConnection: keep-alive")[5] is True


@pytest.mark.parametrize("head", [b"garbage", b"HTTP/1.1 abc OK",
                                  b"HTTP/1.1 200 OK\r\nContent-Length: -1"])
def test_bad_heads(head: bytes) -> None:
    with pytest.raises(UpstreamError):
        parse_head(head)
