"""Small helpers around real clients."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import TYPE_CHECKING, Any

import socketio

if TYPE_CHECKING:
    from tests.cluster import Cluster


async def disconnect(client: Any) -> None:
    """python-engineio's polling client waits out its long-poll on disconnect; don't."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(client.disconnect(), 2.0)


def still_serving(cluster: Cluster) -> None:
    """A well-behaved client still gets an answer, and /health says 200."""

    async def main() -> None:
        client = socketio.AsyncClient(reconnection=False)
        await client.connect(cluster.url, wait_timeout=10)
        assert (await client.call("echo", "still here", timeout=5)) == "still here"
        await disconnect(client)

    asyncio.run(main())
    code, health = cluster.admin("/health")
    assert code == 200, health


def raw_exchange(port: int, data: bytes, *, read_timeout: float = 10.0) -> bytes:
    """Send raw bytes, read the answer: until close, or one whole kept-alive response."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as s:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            out += chunk
            if b"\r\n\r\n" in out and b"Connection: close" not in out and len(out) > 12:
                head, _, body = out.partition(b"\r\n\r\n")
                length = next((int(v) for k, _, v in (ln.partition(b":") for ln in
                               head.split(b"\r\n")[1:]) if k.lower() == b"content-length"), 0)
                if len(body) >= length:
                    break
        return out
