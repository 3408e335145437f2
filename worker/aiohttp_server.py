"""The :class:`~worker.serving.AppServer` for aiohttp apps.

aiohttp's :class:`~aiohttp.web.AppRunner` owns the app's startup and cleanup
signals; a :class:`~aiohttp.web.UnixSite` is the listener; a handed-off socket
is adopted with ``loop.connect_accepted_socket`` into the runner's server (its
protocol factory), fed the head the master already read, if any.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from balancer.forwarding import TrustedProxies, resolve_client
from balancer.peer import Peer, PeerProtocol

from .gate_transport import InnerTransport

__all__ = ["AiohttpServer", "forwarded_middleware"]

log = logging.getLogger("siocluster.worker")

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def forwarded_middleware(trusted: TrustedProxies) -> Any:
    """Give the app the client's address, whichever way the connection came.

    * Through the master's proxy (our Unix socket, which only the master can
      reach: its directory is 0700): the master resolved the client and wrote
      it as a single-entry X-Forwarded-For, so that is believed.
    * Fed by a worker's gate (:mod:`worker.gate`, a polling connection the
      master passed): the gate resolved the client as the master does, and
      its transport shows the connection's client as the peer, so there is
      nothing to do unless a trusted proxy named another.
    * Handed off by the master (a TCP socket whose peer is the client itself,
      or shows the client a PROXY header named: see :mod:`balancer.peer`):
      the client's own X-Forwarded-* headers are believed only when the peer is
      one of ``[balancer] trusted_proxies``, exactly as the master would.  Such
      a connection is closed after any answer but a 101, so a client cannot
      keep it to bypass per-request routing.
    """

    @web.middleware
    async def forwarded(request: web.Request, handler: _Handler) -> web.StreamResponse:
        transport = request.transport
        if isinstance(transport, InnerTransport):
            # A worker's gate fed it (worker/gate.py): request.remote is the transport's
            # peer, the connection's client, and the gate's X-Forwarded-For names the
            # request's (they differ only behind a trusted proxy).
            resolved = request.headers.get("X-Forwarded-For")
            if resolved and resolved != request.remote:
                request = request.clone(remote=resolved)
            return await handler(request)
        peer = transport.get_extra_info("peername") if transport else None
        handed_off = isinstance(peer, tuple)
        xff = request.headers.get("X-Forwarded-For")
        if not handed_off:
            if xff:
                proto = request.headers.get("X-Forwarded-Proto", "http")
                request = request.clone(remote=xff, scheme=proto)
            return await handler(request)
        client = str(peer[0])  # type: ignore[index]
        if client in trusted:
            resolved = resolve_client(client, xff, trusted)
            proto = request.headers.get("X-Forwarded-Proto", "http")
            request = request.clone(remote=resolved, scheme=proto)
        response = await handler(request)
        if response.status != 101:
            response.force_close()
        return response

    return forwarded


class AiohttpServer:
    def __init__(self, app: web.Application, trusted: TrustedProxies, *, access_log: bool) -> None:
        self.app = app
        app.middlewares.insert(0, forwarded_middleware(trusted))
        self.runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=log if access_log else None,
            # By the time aiohttp shuts down every session was closed; what is left
            # are long-polls python-engineio never wakes after a client's close.
            shutdown_timeout=1.0,
        )
        self._site: web.UnixSite | None = None

    async def start(self) -> None:
        await self.runner.setup()  # runs the app's on_startup signals

    async def listen(self, path: str) -> None:
        self._site = web.UnixSite(self.runner, path)
        await self._site.start()

    async def adopt(self, sock: socket.socket, head: bytes, peer: Peer | None) -> None:
        server = self.runner.server
        assert server is not None
        factory = server if peer is None else (lambda: PeerProtocol(server(), peer))
        try:
            _transport, protocol = await asyncio.get_running_loop().connect_accepted_socket(
                factory, sock
            )
        except OSError:
            sock.close()
            return
        if head:
            protocol.data_received(head)

    def protocol(self, peer: Peer | None) -> asyncio.Protocol:
        server = self.runner.server
        assert server is not None
        return server() if peer is None else PeerProtocol(server(), peer)

    async def stop_accepting(self) -> None:
        if self._site is not None:
            await self._site.stop()
            self._site = None

    async def close(self, timeout_s: float) -> None:
        await self.runner.cleanup()  # connections, then on_shutdown / on_cleanup

    def remote_of(self, args: tuple[Any, ...]) -> str | None:
        request: web.Request = args[0]
        return request.remote
