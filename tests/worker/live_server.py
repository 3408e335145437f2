"""A real aiohttp + python-socketio server in the test's own event loop.

For guard tests that need real clients but not a cluster: no processes, no
balancer, a TCP port on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import socketio
from aiohttp import web


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def serve(sio: socketio.AsyncServer) -> AsyncIterator[str]:
    """Serve ``sio`` on a fresh port; yield its base URL."""
    app = web.Application()
    sio.attach(app)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        # A socket whose client already left can keep python-engineio's
        # disconnect() waiting; the worker bounds this step the same way.
        if sio.eio.sockets:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(sio.eio.disconnect(), 1.0)
        await runner.cleanup()


@contextlib.asynccontextmanager
async def client(url: str, **connect: Any) -> AsyncIterator[socketio.AsyncClient]:
    """A connected python-socketio client over WebSocket, always disconnected after."""
    sio = socketio.AsyncClient(reconnection=False)
    connect.setdefault("transports", ["websocket"])
    connect.setdefault("wait_timeout", 5)
    await sio.connect(url, **connect)
    try:
        yield sio
    finally:
        with contextlib.suppress(Exception):
            await sio.disconnect()
