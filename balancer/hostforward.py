"""Forwarding a request to the host that owns its session (several hosts, one cluster).

When :func:`balancer.routing.route_host` says a sid belongs to another live
host, the request goes to that host's balancer, at the address it advertises
in the host registry:

* polling and the app's HTTP requests over pooled keep-alive TCP connections
  (:func:`peer_pool`, the same lean client the balancer uses for its workers);
* a WebSocket upgrade as a byte tunnel (:mod:`balancer.tunnel`): the owner
  host's balancer hands the socket to its worker as usual, and this host
  relays bytes until either side closes.

Each forwarded request carries one signed header (:mod:`balancer.peerauth`):
which host sent it, when, and for which client.  The owner checks it, believes
the client address in it, and never forwards that request again.  A request
that carries the header and fails the check is answered 403 and counted.

:class:`HostLink` holds the token, the pools, and the counters /metrics shows
(requests and bytes by peer, errors, refused forwards).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .exceptions import UpstreamError
from .peerauth import FORWARD_HEADER, ForwardClaim, sign_forward, verify_forward
from .upstream import UpstreamPool, UpstreamResponse

__all__ = ["FORWARD_HEADER_BYTES", "HostLink", "PeerStats", "peer_pool", "split_address"]

FORWARD_HEADER_BYTES = FORWARD_HEADER.encode()


def split_address(address: str) -> tuple[str, int]:
    host, _sep, port = address.rpartition(":")
    return host.removeprefix("[").removesuffix("]"), int(port)


def peer_pool(address: str, *, connect_timeout_s: float, read_timeout_s: float) -> UpstreamPool:
    """Keep-alive connections to another host's balancer, over TCP."""
    return UpstreamPool(address, connect_timeout_s=connect_timeout_s,
                        read_timeout_s=read_timeout_s, tcp=split_address(address))


@dataclass
class PeerStats:
    requests: int = 0
    upgrades: int = 0
    bytes_out: int = 0  # request bytes sent to the peer
    bytes_in: int = 0  # response bytes it answered
    errors: int = 0


@dataclass
class HostLink:
    """This host's side of forwarding: sign, verify, pool, count."""

    token: str
    connect_timeout_s: float
    read_timeout_s: float
    peers: dict[str, PeerStats] = field(default_factory=dict)
    refused: int = 0  # requests that claimed to be forwards and were not
    _pools: dict[str, UpstreamPool] = field(default_factory=dict)

    def sign(self, host_id: str, method: str, target: str, client: str,
             client_port: int = 0) -> bytes:
        """The header line by which this host (``host_id``) vouches for ``client``."""
        value = sign_forward(self.token, host_id, time.time(), client, client_port,
                             method, target)
        return FORWARD_HEADER_BYTES + b": " + value.encode("latin-1")

    def verify(self, value: str, method: str, target: str) -> ForwardClaim | None:
        claim = verify_forward(self.token, value, time.time(), method, target)
        if claim is None:
            self.refused += 1
        return claim

    def stats(self, host: str) -> PeerStats:
        stats = self.peers.get(host)
        if stats is None:
            stats = self.peers[host] = PeerStats()
        return stats

    def pool(self, address: str) -> UpstreamPool:
        pool = self._pools.get(address)
        if pool is None:
            pool = self._pools[address] = peer_pool(
                address, connect_timeout_s=self.connect_timeout_s,
                read_timeout_s=self.read_timeout_s)
        return pool

    async def request(self, host: str, address: str, head: bytes,
                      body: bytes) -> UpstreamResponse:
        pool = self.pool(address)
        stats = self.stats(host)
        stats.requests += 1
        stats.bytes_out += len(head) + len(body)
        try:
            response = await pool.request(head, body)
        except UpstreamError:
            stats.errors += 1
            raise
        stats.bytes_in += len(response.body)
        return response

    def reap(self, now: float, live: set[str]) -> None:
        """Close idle connections; drop the pools of addresses no live host has."""
        for address in list(self._pools):
            if address not in live:
                self._pools.pop(address).close()
            else:
                self._pools[address].reap(now)

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
