"""A WebSocket upgrade on the aiohttp path: hand the connection to its worker, or tunnel it.

With ``[balancer] websocket = "handoff"`` (the default) the client's socket
itself is passed to the worker that owns the session (SCM_RIGHTS over the
worker's handoff channel, :mod:`balancer.handoff`), with the request head
aiohttp already read; the master then forgets the connection
(:data:`HANDED_OFF` sends nothing).  When that is not possible (no channel,
the socket is gone, ``websocket = "tunnel"``) the upgrade is relayed as raw
bytes by :func:`balancer.tunnel.tunnel_upgrade`.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from aiohttp import web

from .forwarding import request_head
from .handoff import encode_handoff
from .hostproxy import FORWARD_CLAIM
from .peerauth import ForwardClaim
from .routing import Forward
from .tunnel import tunnel_upgrade

if TYPE_CHECKING:
    from .proxy import Balancer

__all__ = ["HANDED_OFF", "hand_off_connection", "upgrade"]


class _HandedOff(web.StreamResponse):
    """What the handler returns for a connection that now belongs to a worker: nothing is sent."""

    async def prepare(self, request: web.BaseRequest) -> None:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


HANDED_OFF = _HandedOff()


async def upgrade(b: Balancer, request: web.BaseRequest, decision: Forward, client: str,
                  proto: str) -> web.StreamResponse:
    """Hand the upgrade's connection to the worker, or tunnel it (counted either way)."""
    b.stats.upgrades += 1
    if b.config.websocket == "handoff" and hand_off_connection(b, request, decision):
        b.stats.handoffs += 1
        return HANDED_OFF
    b.stats.tunnels_active += 1
    try:
        return await tunnel_upgrade(
            request,
            b.directory.socket_path(decision.slot, decision.generation),
            client=client,
            proto=proto,
            connect_timeout_s=b.config.connect_timeout_s,
        )
    finally:
        b.stats.tunnels_active -= 1


def hand_off_connection(b: Balancer, request: web.BaseRequest, decision: Forward) -> bool:
    """Pass a keep-alive connection whose next request is an upgrade to its worker.

    aiohttp has already read this head, so it travels with the descriptor
    and the worker feeds it to its parser.  The client sends nothing more
    before the 101, so nothing else is in flight.  Our copy of the
    descriptor is then closed without a shutdown, which leaves the
    connection to the worker.
    """
    channel = b.directory.handoff_channel(decision.slot, decision.generation)
    transport = request.transport
    raw = transport.get_extra_info("socket") if transport is not None else None
    if channel is None or transport is None or raw is None:
        return False
    head = request_head(request.method, request.raw_path, request.raw_headers)
    # The client as aiohttp saw it: the PROXY header's, if one named it, or
    # the one another host of the cluster vouched for.
    peer = transport.get_extra_info("peername")
    try:
        tcp_peer = raw.getpeername()
    except OSError:
        return False
    named = (str(peer[0]), int(peer[1])) if peer and tuple(peer[:2]) != tcp_peer[:2] else None
    claim: ForwardClaim | None = request.get(FORWARD_CLAIM)
    if claim is not None:
        named = (claim.client_ip, claim.client_port)
    try:
        socket.send_fds(channel, [encode_handoff(head, named)], [raw.fileno()])
    except OSError:
        b.stats.handoff_failures += 1
        return False
    request.protocol.force_close()
    transport.abort()
    return True
