"""Several hosts, one cluster: the aiohttp path's forwards to the host a sid names.

With ``[cluster] advertise`` set, every sid carries its host's id
(:mod:`balancer.sid`).  :meth:`HostForwarding.route` decides, before any
worker routing, whether a request is this host's (None), another live
host's (its id), or a stale sid (400), through the pure
:func:`balancer.routing.route_host`; a request that says it was forwarded
by a host of the cluster must carry a valid signature
(:mod:`balancer.peerauth`), else 403, and its claim (the client's address)
is kept on the request under :data:`FORWARD_CLAIM`.  :meth:`HostForwarding.forward`
sends the request on, signed, over the pooled connections to that host
(:class:`~balancer.hostforward.HostLink`), or tunnels a WebSocket upgrade to it.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from aiohttp import hdrs, web
from multidict import CIMultiDict

from .exceptions import UpstreamError, UpstreamUnreachable
from .forwarding import forwarded, request_head
from .hostforward import FORWARD_HEADER_BYTES, split_address
from .peerauth import FORWARD_HEADER
from .relay import HOP_BY_HOP, HOP_BY_HOP_BYTES, json_error
from .routing import SESSION_UNKNOWN, Reject, ToHost, route_host
from .tunnel import tunnel_upgrade

if TYPE_CHECKING:
    from .proxy import Balancer

__all__ = ["FORWARD_CLAIM", "HostForwarding"]

log = logging.getLogger("siocluster.balancer")

FORWARD_CLAIM = "siocluster.forward_claim"  # a verified forward's claim, on the request


class HostForwarding:
    def __init__(self, balancer: Balancer) -> None:
        self._b = balancer

    def route(self, request: web.BaseRequest, sid: str | None,
              host_id: str) -> str | web.StreamResponse | None:
        """The peer host to forward to, an answer, or None to serve it here."""
        b = self._b
        claimed = request.headers.get(FORWARD_HEADER)
        if claimed is not None:
            claim = b.hosts.verify(claimed, request.method, request.raw_path)
            if claim is None:
                log.warning("refused a request claiming to be forwarded by another host, "
                            "from %s", request.remote)
                return json_error(403, "not a genuine forward from a host of this cluster")
            request[FORWARD_CLAIM] = claim
        decision = route_host(sid, host=host_id, live_hosts=b.directory.live_hosts(),
                              forwarded=claimed is not None)
        if isinstance(decision, Reject):
            b.stats.session_unknown += 1
            return web.Response(status=decision.status, body=decision.body,
                                content_type=decision.content_type)
        return decision.host if isinstance(decision, ToHost) else None

    async def forward(self, request: web.BaseRequest, host: str) -> web.StreamResponse:
        """Send the request on to ``host``, signed; or say its sessions are gone."""
        b = self._b
        address = b.directory.peer_address(host)
        if address is None:
            b.stats.session_unknown += 1
            return web.Response(status=400, body=SESSION_UNKNOWN.body,
                                content_type=SESSION_UNKNOWN.content_type)
        client = b.client_address(request)
        signed = b.hosts.sign(b.directory.host_id, request.method, request.raw_path, client)
        proto = request.scheme
        if request.headers.get(hdrs.UPGRADE, "").lower() == "websocket":
            b.stats.upgrades += 1
            b.stats.tunnels_active += 1
            b.hosts.stats(host).upgrades += 1
            try:
                response = await tunnel_upgrade(
                    request, split_address(address), client=client, proto=proto,
                    connect_timeout_s=b.config.connect_timeout_s, extra=(signed,),
                )
            finally:
                b.stats.tunnels_active -= 1
            b.directory.note_peer(host, None if response.status == 101 else
                                  f"upgrade answered {response.status}")
            return response
        body = await b.relay.read_body_within(request)
        if isinstance(body, web.StreamResponse):
            return body
        extra = [*forwarded(client, proto), signed,
                 b"Content-Length: " + str(len(body or b"")).encode()]
        head = request_head(request.method, request.raw_path, request.raw_headers,
                            drop=HOP_BY_HOP_BYTES | {FORWARD_HEADER_BYTES}, extra=extra)
        started = time.monotonic()
        try:
            upstream = await b.hosts.request(host, address, head, body or b"")
        except UpstreamError as exc:
            b.directory.note_peer(host, str(exc))
            log.warning("host %s at %s unreachable: %s", host, address, exc)
            if isinstance(exc, UpstreamUnreachable):
                # Nothing listens there: the host is gone even if its lease is
                # not expired yet.  Its sessions are too, so say so at once.
                b.stats.session_unknown += 1
                return web.Response(status=400, body=SESSION_UNKNOWN.body,
                                    content_type=SESSION_UNKNOWN.content_type)
            b.stats.upstream_errors += 1
            return json_error(502, f"host {host} unavailable")
        b.directory.note_peer(host, None)
        b.stats.latency["forward"].observe(time.monotonic() - started)
        headers: CIMultiDict[str] = CIMultiDict(
            (k, v) for k, v in upstream.headers if k.lower() not in HOP_BY_HOP
        )
        return web.Response(
            status=upstream.status, reason=upstream.reason, headers=headers, body=upstream.body
        )
