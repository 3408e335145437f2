"""The one seam between the worker runtime and the HTTP server that runs the app.

:class:`~worker.server.WorkerRuntime` owns the lifecycle (instrument Engine.IO,
adapter, ready, heartbeats, drain); it does not know which framework serves
the app.  It talks to an :class:`AppServer`:

1. :meth:`~AppServer.start`: the app's own startup (aiohttp's ``on_startup``
   signals, the ASGI lifespan ``startup``); a failure here is a boot failure;
2. :meth:`~AppServer.listen`: serve on the private Unix socket the master
   proxies HTTP to;
3. :meth:`~AppServer.adopt`: take a client socket the master handed off,
   optionally with the request head it already read, and optionally with the
   client's address when it is not the socket's peer (PROXY protocol);
   :meth:`~AppServer.protocol` is a new connection's HTTP protocol (showing
   ``peer`` as its client when given), for the gate (:mod:`worker.gate`) to
   feed a polling connection's requests to, or to give an upgrade's socket;
4. :meth:`~AppServer.stop_accepting`, then :meth:`~AppServer.close`: the app's
   own shutdown runs last, after every session was closed.

:meth:`~AppServer.remote_of` gives the client address from the arguments
python-engineio passes its driver's ``translate_request`` (an aiohttp request,
or an ASGI scope), so ``environ["REMOTE_ADDR"]`` is the client the master
resolved under the same ``trusted_proxies`` rules for both.

:func:`build_server` is the only place that picks an implementation, from the
shape :mod:`worker.app_loader` found.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any, Protocol

from balancer.forwarding import TrustedProxies
from balancer.peer import Peer

from .app_loader import LoadedApp

__all__ = ["AppServer", "build_server"]


class AppServer(Protocol):
    async def start(self) -> None: ...

    async def listen(self, path: str) -> None: ...

    async def adopt(self, sock: socket.socket, head: bytes, peer: Peer | None) -> None: ...

    def protocol(self, peer: Peer | None) -> asyncio.Protocol: ...

    async def stop_accepting(self) -> None: ...

    async def close(self, timeout_s: float) -> None: ...

    def remote_of(self, args: tuple[Any, ...]) -> str | None: ...


def build_server(
    loaded: LoadedApp, trusted: TrustedProxies, *, access_log: bool, max_message_bytes: int
) -> AppServer:
    """``max_message_bytes``: the WebSocket message cap (0: the server's default)."""
    if loaded.kind == "asgi":
        from .asgi_server import AsgiServer

        return AsgiServer(
            loaded.app, trusted, access_log=access_log, max_message_bytes=max_message_bytes
        )
    from .aiohttp_server import AiohttpServer

    return AiohttpServer(loaded.app, trusted, access_log=access_log)
