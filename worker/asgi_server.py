"""The :class:`~worker.serving.AppServer` for ASGI apps, on uvicorn's protocols.

uvicorn's HTTP protocol class (httptools) parses requests and upgrades
WebSockets (its ``ws="auto"`` class) exactly as a standalone ``uvicorn``
would; :mod:`worker.uvicorn_compat` builds its protocol factory.  The worker
owns what ``uvicorn.Server`` would otherwise own:

* the listener: ``loop.create_unix_server`` on the private socket;
* handed-off sockets: ``loop.connect_accepted_socket`` with the same
  factory, fed the head the master already read; a client address from a
  PROXY header is shown through :class:`~balancer.peer.PeerTransport`;
* the lifespan (:mod:`worker.lifespan`): startup before ``ready``, shutdown
  after the drain, once per worker;
* the Date header refresh ``Server.on_tick`` does once a second.

:class:`ForwardedMiddleware` is the ASGI twin of the aiohttp worker's
middleware: ``scope["client"]`` is the client under the same
``trusted_proxies`` rules, and a handed-off connection is closed after any
HTTP answer, so a client cannot keep it to bypass per-request routing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import MutableMapping
from typing import Any

from balancer.forwarding import TrustedProxies, resolve_client
from balancer.peer import Peer, PeerProtocol, PeerTransport

from .lifespan import AsgiApp, Lifespan, Message
from .uvicorn_compat import ServerState, make_config, protocol_factory, refresh_default_headers

__all__ = ["AsgiServer", "ForwardedMiddleware"]

log = logging.getLogger("siocluster.worker")

# What is left after every session closed: long-polls python-engineio never
# wakes after a client's close (the aiohttp worker's shutdown_timeout too).
_CONNECTIONS_GRACE_S = 1.0


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _scheme(scope_type: str, proto: str | None) -> str:
    secure = (proto or "http").strip().lower() in ("https", "wss")
    if scope_type == "websocket":
        return "wss" if secure else "ws"
    return "https" if secure else "http"


class ForwardedMiddleware:
    """Set ``scope["client"]`` and ``scope["scheme"]`` as the aiohttp worker does.

    * No client in the scope: the connection came over our Unix socket, which
      only the master reaches; its single-entry X-Forwarded-For is believed.
    * A client: a socket the master handed off; X-Forwarded-* are believed
      only when that peer is one of ``trusted_proxies``.
    """

    def __init__(self, app: AsgiApp, trusted: TrustedProxies) -> None:
        self.app = app
        self.trusted = trusted

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        headers = scope.get("headers", [])
        xff = _header(headers, b"x-forwarded-for")
        proto = _header(headers, b"x-forwarded-proto")
        if client is None:
            if xff:
                scope = {**scope, "client": (xff.strip(), 0), "scheme": _scheme(kind, proto)}
            await self.app(scope, receive, send)
            return
        peer = str(client[0])
        if peer in self.trusted:
            resolved = resolve_client(peer, xff, self.trusted)
            scope = {**scope, "client": (resolved, client[1]), "scheme": _scheme(kind, proto)}
        if kind == "websocket":
            await self.app(scope, receive, send)
            return

        async def send_then_close(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [(b"connection", b"close")]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_then_close)


class _PeerTransport(PeerTransport):
    """uvicorn asks the transport's socket for the peer first; make it ask us."""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket":
            return default
        return super().get_extra_info(name, default)


class _PeerProtocol(PeerProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(_PeerTransport(transport, self._peername))


class AsgiServer:
    def __init__(
        self, app: AsgiApp, trusted: TrustedProxies, *, access_log: bool, max_message_bytes: int
    ) -> None:
        self.app = app
        self.lifespan = Lifespan(app)
        self.config = make_config(
            ForwardedMiddleware(app, trusted),
            access_log=access_log,
            ws_max_size=max_message_bytes or None,
        )
        self.state = ServerState()
        self._factory = protocol_factory(self.config, self.state, self.lifespan.state)
        self._server: asyncio.Server | None = None
        self._ticker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.lifespan.startup()  # raises LifespanFailed: a boot failure
        refresh_default_headers(self.config, self.state)
        self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            refresh_default_headers(self.config, self.state)

    async def listen(self, path: str) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(self._factory, path=path)

    async def adopt(self, sock: socket.socket, head: bytes, peer: Peer | None) -> None:
        factory = self._factory
        if peer is not None:
            factory = lambda: _PeerProtocol(self._factory(), peer)  # noqa: E731
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
        protocol: asyncio.Protocol = self._factory()
        return protocol if peer is None else _PeerProtocol(protocol, peer)

    async def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()

    async def close(self, timeout_s: float) -> None:
        """Connections (as ``uvicorn.Server.shutdown``), then the lifespan shutdown."""
        await self.stop_accepting()
        for connection in list(self.state.connections):
            connection.shutdown()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(timeout_s, _CONNECTIONS_GRACE_S)
        while (self.state.connections or self.state.tasks) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for task in list(self.state.tasks):
            task.cancel()
        for connection in list(self.state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.close()
        if self._ticker is not None:
            self._ticker.cancel()
        if self._server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        await self.lifespan.shutdown(timeout_s)

    def remote_of(self, args: tuple[Any, ...]) -> str | None:
        client = args[0].get("client")
        return str(client[0]) if client else None
