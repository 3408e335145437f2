"""Plain HTTP from the aiohttp server to the worker that owns the request.

This is the aiohttp path (``[balancer] http = "aiohttp"``, and the large or
streamed bodies the httptools front hands over).  Engine.IO requests with a
body already read (long-polls, sends, handshakes) go out over the pooled
raw connections of :class:`~balancer.upstream.UpstreamPool` (one write out,
one small answer back).  Everything else (the app's own routes, bodies over
256 KiB streamed as they arrive) goes over a keep-alive
:class:`aiohttp.ClientSession` per worker generation, with no connection cap
(a cap would queue long-polls behind each other).

Request bodies always reach the worker with a Content-Length: python-engineio
reads ``CONTENT_LENGTH`` and would see a chunked body as empty, so a chunked
body is buffered (up to ``max_message_bytes``).  A body that stops arriving
for ``idle_timeout_s`` is answered 408 and the connection closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import hdrs, web
from multidict import CIMultiDict

from .exceptions import UpstreamError
from .forwarding import forwarded, request_head
from .routing import Forward
from .upstream import IDLE_S

if TYPE_CHECKING:
    from .proxy import Balancer

__all__ = [
    "HOP_BY_HOP",
    "HOP_BY_HOP_BYTES",
    "BodyRelay",
    "WorkerRelay",
    "forward_headers",
    "json_error",
    "relay_response",
]

log = logging.getLogger("siocluster.balancer")

HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Content-Length",
        "X-Forwarded-For",
        "X-Forwarded-Proto",
    )
)
HOP_BY_HOP_BYTES = frozenset(h.encode() for h in HOP_BY_HOP)
_STREAM_BODY_OVER = 256 * 1024


def json_error(status: int, message: str) -> web.Response:
    return web.json_response({"code": status, "message": message}, status=status)


def forward_headers(
    items: Iterable[tuple[str, str]], client: str, proto: str
) -> CIMultiDict[str]:
    """Request headers for the worker: Host kept, hop-by-hop dropped, forwarded set."""
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in items:
        if name.lower() not in HOP_BY_HOP:
            out.add(name, value)
    out["X-Forwarded-For"] = client
    out["X-Forwarded-Proto"] = proto
    return out


class BodyRelay:
    """A large body streamed to the worker, chunk by chunk, as long as each
    chunk arrives within ``idle_s`` of the last (else ``stalled``)."""

    def __init__(self, content: aiohttp.StreamReader, idle_s: float) -> None:
        self._content = content
        self._idle_s = idle_s
        self.stalled = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            try:
                async with asyncio.timeout(self._idle_s):
                    chunk = await self._content.readany()
            except TimeoutError:
                self.stalled = True
                raise
            if not chunk:
                return
            yield chunk


async def relay_response(request: web.BaseRequest,
                         upstream: aiohttp.ClientResponse) -> web.StreamResponse:
    """The worker's answer to the client: whole when small, streamed when large."""
    resp_headers: CIMultiDict[str] = CIMultiDict(
        (k, v) for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP
    )
    length = upstream.content_length
    if length is not None and length <= _STREAM_BODY_OVER:
        payload = await upstream.read()
        return web.Response(status=upstream.status, reason=upstream.reason,
                            headers=resp_headers, body=payload)
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason,
                                  headers=resp_headers)
    if length is not None:
        response.content_length = length
    await response.prepare(request)
    async for chunk in upstream.content.iter_any():
        await response.write(chunk)
    await response.write_eof()
    return response


class WorkerRelay:
    """The aiohttp client side of the balancer: one keep-alive session per worker generation."""

    def __init__(self, balancer: Balancer) -> None:
        self._b = balancer
        config = balancer.config
        self._sessions: dict[tuple[int, int], aiohttp.ClientSession] = {}
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=config.connect_timeout_s,
            sock_read=config.upstream_timeout_s,
        )

    async def close(self) -> None:
        sessions = list(self._sessions.values())
        self._sessions.clear()
        for s in sessions:
            await s.close()

    def forget(self, slot: int, generation: int) -> None:
        """Close the session of a worker that is gone."""
        session = self._sessions.pop((slot, generation), None)
        if session is not None:
            asyncio.get_running_loop().create_task(session.close())

    def _session(self, slot: int, generation: int) -> aiohttp.ClientSession:
        session = self._sessions.get((slot, generation))
        if session is not None:
            return session
        connector = aiohttp.UnixConnector(
            path=self._b.directory.socket_path(slot, generation), limit=0, keepalive_timeout=IDLE_S
        )
        session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        )
        self._sessions[(slot, generation)] = session
        return session

    async def read_body_within(self, request: web.BaseRequest) -> bytes | web.StreamResponse:
        """The whole body (limits and the idle timeout applied), or the error answer."""
        idle = self._b.limits.idle_timeout_s
        try:
            async with asyncio.timeout(idle or None):
                body = await self._read_body(request, stream_large=False)
        except asyncio.IncompleteReadError:
            return json_error(400, "request body shorter than Content-Length")
        except TimeoutError:
            return await self.body_too_slow(request)
        assert body is not None
        return body

    async def _forward_engineio(
        self, request: web.BaseRequest, decision: Forward, client: str, proto: str, body: bytes
    ) -> web.StreamResponse:
        """The polling hot path: one write out, one small answer back (see upstream.py)."""
        pool = self._b.pool(decision.slot, decision.generation)
        extra = forwarded(client, proto)
        if body or request.method == "POST":
            extra.append(b"Content-Length: " + str(len(body)).encode())
        head = request_head(request.method, request.raw_path, request.raw_headers,
                            drop=HOP_BY_HOP_BYTES, extra=extra)
        try:
            upstream = await pool.request(head, body)
        except UpstreamError as exc:
            self._b.stats.upstream_errors += 1
            log.debug("worker %d unreachable: %s", decision.slot, exc)
            return json_error(502, "worker unavailable")
        headers: CIMultiDict[str] = CIMultiDict(
            (k, v) for k, v in upstream.headers if k.lower() not in HOP_BY_HOP
        )
        return web.Response(
            status=upstream.status, reason=upstream.reason, headers=headers, body=upstream.body
        )

    async def _read_body(self, request: web.BaseRequest, *,
                         stream_large: bool = True) -> bytes | web.Response | None:
        """The body to send on, or None to stream it, or an error response."""
        if not request.body_exists:
            return b""
        length = request.content_length
        limit = self._b.limits.max_message_bytes
        if length is not None:
            if (stream_large and length > _STREAM_BODY_OVER
                    and request.path != self._b.directory.engineio_path):
                return None
            if limit and length > limit:
                self._b.stats.too_large += 1
                return json_error(413, f"request body over {limit} bytes")
            return await request.content.readexactly(length) if length else b""
        # Chunked: python-engineio would read it as empty, so buffer it (bounded).
        data = await request.content.read(limit + 1 if limit else -1)
        if limit and len(data) > limit:
            self._b.stats.too_large += 1
            return json_error(413, f"request body over {limit} bytes")
        return data

    async def forward(
        self, request: web.BaseRequest, decision: Forward, client: str, proto: str
    ) -> web.StreamResponse:
        idle = self._b.limits.idle_timeout_s
        try:
            if idle and not request.content.is_eof():
                # The body is still arriving: a client may not trickle it forever.
                async with asyncio.timeout(idle):
                    body = await self._read_body(request)
            else:
                body = await self._read_body(request)
        except asyncio.IncompleteReadError:
            return json_error(400, "request body shorter than Content-Length")
        except TimeoutError:
            return await self.body_too_slow(request)
        if isinstance(body, web.Response):
            return body
        if body is not None and request.path == self._b.directory.engineio_path:
            return await self._forward_engineio(request, decision, client, proto, body)
        headers = forward_headers(request.headers.items(), client, proto)
        data: Any
        relay: BodyRelay | None = None
        if body is None:
            headers[hdrs.CONTENT_LENGTH] = str(request.content_length)
            if idle:
                data = relay = BodyRelay(request.content, idle)
            else:
                data = request.content
        else:
            if body or request.method in ("POST", "PUT", "PATCH"):
                headers[hdrs.CONTENT_LENGTH] = str(len(body))
            data = body or None
        session = self._session(decision.slot, decision.generation)
        try:
            async with session.request(
                request.method,
                f"http://worker{request.raw_path}",
                headers=headers,
                data=data,
                allow_redirects=False,
            ) as upstream:
                return await relay_response(request, upstream)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            if relay is not None and relay.stalled:
                return await self.body_too_slow(request)
            self._b.stats.upstream_errors += 1
            log.debug("worker %d unreachable: %r", decision.slot, exc)
            return json_error(502, "worker unavailable")

    async def body_too_slow(self, request: web.BaseRequest) -> web.StreamResponse:
        """408 for a body that stopped arriving, and close now (aiohttp would
        otherwise linger up to 10 s reading the rest)."""
        self._b.stats.body_timeouts += 1
        too_slow = json_error(
            408, f"request body not received within {self._b.limits.idle_timeout_s:g}s"
        )
        too_slow.force_close()
        await too_slow.prepare(request)
        await too_slow.write_eof()
        if request.transport is not None:
            request.transport.close()
        return too_slow
