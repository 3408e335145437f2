"""The balancer's shared state, and the aiohttp server's handler that routes every request by sid.

:class:`Balancer` holds what every path shares: the counters
(:mod:`balancer.stats`), the admission limits (:meth:`Balancer.admit`), the
upstream pools (:meth:`Balancer.pool`).  The hot path is
:mod:`balancer.front` (httptools); the aiohttp server below serves a
connection with ``[balancer] http = "aiohttp"``, and the few connections the
front hands over (tunnelled upgrades, large streamed bodies).

Each request is routed on its own (:func:`balancer.routing.route`), so one
keep-alive client connection can carry requests of sessions that live on
different workers.  :meth:`Balancer.handle` only dispatches: a sid of
another host goes to :mod:`balancer.hostproxy`, a WebSocket upgrade to
:mod:`balancer.upgrade` (handed off or tunnelled), plain HTTP (long-polling
and the app's own routes) to the owning worker through
:mod:`balancer.relay`.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import hdrs, web

from .config import BalancerConfig, LimitsConfig
from .directory import WorkerDirectory
from .forwarding import TrustedProxies, resolve_client
from .hostforward import HostLink
from .hostproxy import FORWARD_CLAIM, HostForwarding
from .peerauth import ForwardClaim
from .ratelimit import KeyedLimiter, retry_after_header
from .relay import WorkerRelay, forward_headers
from .returns import ReturnDesk
from .routing import Forward, Reject, extract_sid, route
from .sessions import SessionLedger
from .stats import BalancerStats
from .upgrade import upgrade
from .upstream import UpstreamPool

__all__ = ["Balancer", "BalancerStats", "forward_headers"]

class Balancer:
    def __init__(
        self, config: BalancerConfig, limits: LimitsConfig, directory: WorkerDirectory,
        *, peer_token: str = "",
    ) -> None:
        self.config = config
        self.limits = limits
        self.directory = directory
        self.stats = BalancerStats()
        # Several hosts: forwarding to the host a sid names (the directory knows
        # this host's id once it has joined the cluster).
        self.hosts = HostLink(peer_token, config.connect_timeout_s,
                              config.upstream_timeout_s)
        self.trusted = TrustedProxies(config.trusted_proxies)
        self._pools: dict[tuple[int, int], UpstreamPool] = {}
        rate = limits.handshake_rate_per_ip
        self.handshake_limiter = KeyedLimiter(rate, max(1.0, 2 * rate)) if rate else None
        self.sessions = SessionLedger()
        self._engineio_path = ""
        self._engineio_path_bytes = b""
        # The paths: plain HTTP to a worker, forwards to other hosts.
        self.relay = WorkerRelay(self)
        self.host_forwarding = HostForwarding(self)
        # Polling connections workers give back (balancer.stickiness).
        self.returns = ReturnDesk(self.stats)

    def make_server(self, **kwargs: Any) -> web.Server:
        """aiohttp's low-level server: every request goes to :meth:`handle`, with
        no router or middleware in between (this is the hot path)."""
        return web.Server(self.handle, **kwargs)

    async def close(self) -> None:
        self.hosts.close()
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        await self.relay.close()

    def reap_idle(self) -> None:
        """Close pooled worker connections idle longer than :data:`upstream.IDLE_S`."""
        now = time.monotonic()
        for pool in self._pools.values():
            pool.reap(now)
        live = {a for h in self.directory.live_hosts() if (a := self.directory.peer_address(h))}
        self.hosts.reap(now, live)

    def forget(self, slot: int, generation: int) -> None:
        """Drop the pools of a worker that is gone."""
        self.sessions.forget((slot, generation))
        pool = self._pools.pop((slot, generation), None)
        if pool is not None:
            pool.close()
        self.relay.forget(slot, generation)

    def client_address(self, request: web.BaseRequest) -> str:
        claim: ForwardClaim | None = request.get(FORWARD_CLAIM)
        if claim is not None:
            return claim.client_ip  # another host of the cluster vouches for it
        peer = request.remote or ""
        if not self.trusted:
            return peer
        return resolve_client(peer, request.headers.get("X-Forwarded-For"), self.trusted)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        self.stats.requests += 1
        sid = extract_sid(request.query_string)
        host_id = self.directory.host_id
        if host_id:
            to_host = self.host_forwarding.route(request, sid, host_id)
            if isinstance(to_host, web.StreamResponse):
                return to_host
            if to_host is not None:
                return await self.host_forwarding.forward(request, to_host)
        decision = route(sid, self.directory.views(), host_id)
        if isinstance(decision, Reject):
            if decision.status == 400:
                self.stats.session_unknown += 1
            else:
                self.stats.no_worker += 1
            return web.Response(
                status=decision.status, body=decision.body, content_type=decision.content_type
            )
        client = self.client_address(request)
        if decision.new_session and request.path == self.directory.engineio_path:
            refused = self._admit(client, decision)
            if refused is not None:
                return refused
            self.directory.note_handshake(decision.slot, decision.generation)
            self.stats.handshakes += 1
        proto = request.scheme
        if request.headers.get(hdrs.UPGRADE, "").lower() == "websocket":
            return await upgrade(self, request, decision, client, proto)
        started = time.monotonic()
        response = await self.relay.forward(request, decision, client, proto)
        if request.path != self.directory.engineio_path:
            kind = "app"
        elif decision.new_session:
            kind = "handshake"
        else:
            kind = "poll" if request.method == "GET" else "send"
        self.stats.latency[kind].observe(time.monotonic() - started)
        return response

    def admit(self, client: str, decision: Forward) -> tuple[int, str, str] | None:
        """The per-address limits on a new session: None admits (and counts) it,
        else (status, message, Retry-After)."""
        now = time.monotonic()
        if self.handshake_limiter is not None:
            allowed, wait = self.handshake_limiter.allow(client, now)
            if not allowed:
                self.stats.rate_limited += 1
                return 429, "too many new sessions from this address", retry_after_header(wait)
        cap = self.limits.max_sessions_per_ip
        if cap:
            if self.sessions.count(client, now) >= cap:
                self.stats.session_limited += 1
                return 429, f"this address already has {cap} sessions", "1"
            self.sessions.forwarded((decision.slot, decision.generation), client, now)
        return None

    def _admit(self, client: str, decision: Forward) -> web.Response | None:
        refused = self.admit(client, decision)
        if refused is None:
            return None
        status, message, retry_after = refused
        return web.json_response({"code": status, "message": message}, status=status,
                                 headers={"Retry-After": retry_after})

    def engineio_path_bytes(self) -> bytes:
        """The Engine.IO path, as the front door compares it with request targets."""
        path = self.directory.engineio_path
        if path != self._engineio_path:
            self._engineio_path = path
            self._engineio_path_bytes = path.encode("latin-1")
        return self._engineio_path_bytes

    def pool(self, slot: int, generation: int) -> UpstreamPool:
        """The pooled connections to one worker generation (see upstream.py)."""
        key = (slot, generation)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = UpstreamPool(
                self.directory.socket_path(*key),
                connect_timeout_s=self.config.connect_timeout_s,
                read_timeout_s=self.config.upstream_timeout_s,
            )
        return pool

    def status(self) -> dict[str, Any]:
        return self.stats.as_dict()
