from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from pathlib import Path

import pytest

from balancer.exceptions import UpstreamError
from balancer.upstream import UpstreamPool


async def _serve_once(path: str, answers: list[bytes], *, close: bool = False) -> asyncio.Server:
    """A worker that answers each request head with the next of ``answers``
    (on whichever connection it came), then closes if the answer said so."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while answers:
                await reader.readuntil(b"\r\n\r\n")
                answer = answers.pop(0)
                writer.write(answer)
                await writer.drain()
                if close or b"close" in answer.lower() or answer.startswith(b"HTTP/1.0"):
                    break
        writer.close()

    return await asyncio.start_unix_server(serve, path)


def test_answers_are_read_whole_and_connections_pooled(tmp_path: Path) -> None:
    path = str(tmp_path / "w.sock")
    head = b"GET / HTTP/1.1\r\nHost: w\r\n\r\n"

    async def main() -> None:
        server = await _serve_once(path, [
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nSet-Cookie: a=1\r\n"
            b"Set-Cookie: b=2\r\n\r\nok",
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: 1\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
            b"HTTP/1.0 200 OK\r\n\r\nuntil the close",
        ])
        pool = UpstreamPool(path, connect_timeout_s=1, read_timeout_s=1)
        first = await pool.request(head, b"")
        assert (first.status, first.reason, first.body) == (200, "OK", b"ok")
        assert [v for k, v in first.headers if k == "Set-Cookie"] == ["a=1", "b=2"]
        assert len(pool._idle) == 1  # kept alive
        second = await pool.request(head, b"")
        assert (second.status, second.body) == (201, b"abcde")
        third = await pool.request(head, b"")
        assert (third.status, third.body) == (204, b"")
        assert not [c for c in pool._idle if not c.closed]  # Connection: close is not pooled
        fourth = await pool.request(head, b"")
        assert (fourth.status, fourth.body) == (200, b"until the close")
        pool.close()
        server.close()

    asyncio.run(main())


@pytest.mark.parametrize("answer", [b"garbage\r\n\r\n", b"HTTP/1.1 abc OK\r\n\r\n",
                                    b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                                    b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort"])
def test_unreadable_answers_are_upstream_errors(tmp_path: Path, answer: bytes) -> None:
    path = str(tmp_path / "w.sock")

    async def main() -> None:
        server = await _serve_once(path, [answer], close=True)
        pool = UpstreamPool(path, connect_timeout_s=1, read_timeout_s=0.5)
        with pytest.raises(UpstreamError):
            await pool.request(b"GET / HTTP/1.1\r\nHost: w\r\n\r\n", b"")
        pool.close()
        server.close()

    asyncio.run(main())


def test_no_worker_listening_is_an_upstream_error(tmp_path: Path) -> None:
    async def main() -> None:
        pool = UpstreamPool(str(tmp_path / "none.sock"), connect_timeout_s=1, read_timeout_s=1)
        with pytest.raises(UpstreamError):
            await pool.request(b"GET / HTTP/1.1\r\nHost: w\r\n\r\n", b"")

    asyncio.run(main())


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
