from __future__ import annotations

import asyncio
import socket
import struct
from pathlib import Path

import pytest

from balancer.exceptions import UpstreamError
from balancer.upstream import UpstreamPool, parse_head


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


def test_a_worker_that_resets_every_connection_is_an_upstream_error(tmp_path: Path) -> None:
    """A pooled connection found dead, then a fresh one reset too (the worker died
    between the two): UpstreamError (answered 502), never another exception (500)."""
    path = str(tmp_path / "w.sock")

    async def main() -> None:
        answered = 0

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal answered
            await reader.readuntil(b"\r\n\r\n")
            if answered == 0:  # the first request is answered and the connection kept
                answered += 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
                await reader.readuntil(b"\r\n\r\n")  # the client's next request...
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()  # ...which gets a reset, as every later one

        server = await asyncio.start_unix_server(serve, path)
        pool = UpstreamPool(path, connect_timeout_s=1, read_timeout_s=1)
        head = b"GET / HTTP/1.1\r\nHost: w\r\n\r\n"
        assert (await pool.request(head, b"")).body == b"ok"
        with pytest.raises(UpstreamError):
            await pool.request(head, b"")
        pool.close()
        server.close()

    asyncio.run(main())
