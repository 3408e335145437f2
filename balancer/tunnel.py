"""WebSocket upgrades relayed as raw bytes, never parsed as frames.

The upgrade request is re-sent to the worker's Unix socket with the
balancer's X-Forwarded-* headers.  If the worker answers 101, the same
response head goes to the client, aiohttp's protocol is told to feed every
further client byte to :class:`_Relay` (the hook aiohttp's own
``WebSocketResponse`` uses), and worker bytes are written straight to the
client transport.  Both directions apply backpressure: a slow worker pauses
reading from the client, a slow client stops reading from the worker.  When
either side closes, the other is closed too.  nginx and HAProxy do the same
after a 101.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from .forwarding import forwarded, request_head

__all__ = ["tunnel_upgrade"]

_MAX_HEAD = 64 * 1024
_SKIP_REQUEST = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-siocluster-forward"})
_HIGH_WATER = 256 * 1024


class _Relay:
    """Fed by aiohttp's protocol with client bytes after the 101."""

    def __init__(self, upstream: asyncio.StreamWriter, client: asyncio.Transport) -> None:
        self._upstream = upstream
        self._client = client
        self._paused = False

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if self._upstream.is_closing():
            return True, b""
        self._upstream.write(data)
        if not self._paused and self._upstream.transport.get_write_buffer_size() > _HIGH_WATER:
            self._paused = True
            self._client.pause_reading()
            asyncio.get_running_loop().create_task(self._resume_when_drained())
        return False, b""

    async def _resume_when_drained(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self._upstream.drain()
        self._paused = False
        if not self._client.is_closing():
            self._client.resume_reading()

    def feed_eof(self) -> None:
        if not self._upstream.is_closing():
            self._upstream.close()


def _parse_response_head(head: bytes) -> tuple[int, str, CIMultiDict[str]]:
    text = head.decode("latin-1")
    status_line, *header_lines = text.split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise ValueError(f"bad status line from worker: {status_line!r}")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in header_lines:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if sep:
            headers.add(name.strip(), value.strip())
    return int(parts[1]), parts[2] if len(parts) > 2 else "", headers


async def tunnel_upgrade(
    request: web.BaseRequest, target: str | tuple[str, int], *, client: str, proto: str,
    connect_timeout_s: float, extra: Sequence[bytes] = (),
) -> web.StreamResponse:
    """Relay an upgrade to ``target``: a worker's Unix socket path, or the
    ``(host, port)`` of another host's balancer (with ``extra`` header lines)."""
    try:
        if isinstance(target, str):
            connecting = asyncio.open_unix_connection(target, limit=_MAX_HEAD)
        else:
            connecting = asyncio.open_connection(*target, limit=_MAX_HEAD)
        reader, writer = await asyncio.wait_for(connecting, connect_timeout_s)
    except (TimeoutError, OSError):
        return web.json_response({"code": 502, "message": "worker unavailable"}, status=502)
    try:
        writer.write(request_head(request.method, request.raw_path, request.raw_headers,
                                  drop=_SKIP_REQUEST,
                                  extra=[*forwarded(client, proto), *extra]))
        head = await reader.readuntil(b"\r\n\r\n")
        status, reason, headers = _parse_response_head(head[:-4])
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
        writer.close()
        return web.json_response({"code": 502, "message": "worker unavailable"}, status=502)

    if status != 101:
        length = int(headers.get("Content-Length", "0") or 0)
        try:
            body = await reader.readexactly(length) if length else b""
        except (OSError, asyncio.IncompleteReadError):
            body = b""
        writer.close()
        headers.popall("Content-Length", None)
        headers.popall("Transfer-Encoding", None)
        headers.popall("Connection", None)
        return web.Response(status=status, reason=reason, headers=headers, body=body)

    response = web.StreamResponse(status=101, reason=reason or "Switching Protocols")
    for name, value in headers.items():
        response.headers.add(name, value)
    await response.prepare(request)
    transport = request.transport
    assert transport is not None
    protocol: Any = request.protocol
    protocol.keep_alive(False)
    protocol.set_parser(_Relay(writer, transport))
    try:
        while True:
            data = await reader.read(65536)
            if not data or transport.is_closing():
                break
            transport.write(data)
            await request.writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()
        if not transport.is_closing():
            transport.close()
    return response
