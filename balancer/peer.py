"""Show a protocol another client address than its socket's peer.

Behind a PROXY-protocol load balancer the TCP peer is the load balancer; the
client is the address its header named.  aiohttp learns the client from
``transport.get_extra_info("peername")``, so the protocol is given a
transport that answers that one question differently and passes everything
else through.  The master's proxy and a worker adopting a handed-off socket
use it alike, so ``request.remote``, the rate limits and the access log all
see the same client.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["Peer", "PeerProtocol", "PeerTransport"]

Peer = tuple[str, int]


class PeerTransport:
    def __init__(self, transport: Any, peername: Peer) -> None:
        self._transport = transport
        self._peername = peername
        # The hot calls, bound once instead of looked up through __getattr__.
        self.write = transport.write
        self.is_closing = transport.is_closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._peername
        return self._transport.get_extra_info(name, default)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class PeerProtocol(asyncio.Protocol):
    """Passes everything to ``inner``, whose transport reports ``peername``."""

    def __init__(self, inner: Any, peername: Peer) -> None:
        self._inner = inner
        self._peername = peername

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(PeerTransport(transport, self._peername))

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        result: bool | None = self._inner.eof_received()
        return result

    def connection_lost(self, exc: Exception | None) -> None:
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()
