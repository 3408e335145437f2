"""The balancer's shared state, and the aiohttp reverse proxy that routes every request by sid.

:class:`Balancer` holds what every path shares: the counters, the admission
limits (:meth:`Balancer.admit`), the upstream pools (:meth:`Balancer.pool`).
The hot path is :mod:`balancer.front` (httptools); the aiohttp server below
serves a connection with ``[balancer] http = "aiohttp"``, and the few
connections the front hands over (tunnelled upgrades, large streamed bodies).

Each request is routed on its own (:func:`balancer.routing.route`), so one
keep-alive client connection can carry requests of sessions that live on
different workers.  Plain HTTP (long-polling and the app's own routes) goes
to the owning worker's Unix socket over a pooled keep-alive
:class:`aiohttp.ClientSession`, one per worker generation, with no connection
cap (a cap would queue long-polls behind each other).  WebSocket upgrades are
handed to :mod:`balancer.tunnel`.

Request bodies always reach the worker with a Content-Length: python-engineio
reads ``CONTENT_LENGTH`` and would see a chunked body as empty.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import hdrs, web
from multidict import CIMultiDict

from .config import BalancerConfig, LimitsConfig
from .directory import WorkerDirectory
from .exceptions import UpstreamError, UpstreamUnreachable
from .forwarding import TrustedProxies, forwarded, request_head, resolve_client
from .handoff import encode_handoff
from .hostforward import FORWARD_HEADER_BYTES, HostLink, split_address
from .peerauth import FORWARD_HEADER, ForwardClaim
from .ratelimit import KeyedLimiter, retry_after_header
from .routing import SESSION_UNKNOWN, Forward, Reject, ToHost, extract_sid, route, route_host
from .sessions import SessionLedger
from .tunnel import tunnel_upgrade
from .upstream import IDLE_S, UpstreamPool

__all__ = ["Balancer", "BalancerStats"]

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
_HOP_BY_HOP_BYTES = frozenset(h.encode() for h in HOP_BY_HOP)
_STREAM_BODY_OVER = 256 * 1024
_CLAIM = "siocluster.forward_claim"  # a verified forward's claim, on the request


LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                     10.0, 30.0, 60.0)


@dataclass
class Latency:
    """A histogram kept as plain counters; /metrics renders it."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    total_s: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self.total_s += seconds


@dataclass
class BalancerStats:
    requests: int = 0
    handshakes: int = 0
    session_unknown: int = 0
    no_worker: int = 0
    upstream_errors: int = 0
    too_large: int = 0
    upgrades: int = 0
    tunnels_active: int = 0
    handoffs: int = 0
    handoff_failures: int = 0
    head_timeouts: int = 0
    body_timeouts: int = 0
    rate_limited: int = 0
    session_limited: int = 0
    proxy_protocol_errors: int = 0
    # Proxied request latency by kind: "handshake", "poll" (GET with sid), "send"
    # (POST with sid) and "app" (everything else).
    latency: dict[str, Latency] = field(
        default_factory=lambda: {k: Latency() for k in ("handshake", "poll", "send", "app",
                                                          "forward")}
    )

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "handshakes": self.handshakes,
            "session_unknown_400": self.session_unknown,
            "no_worker_503": self.no_worker,
            "upstream_errors_502": self.upstream_errors,
            "too_large_413": self.too_large,
            "upgrades": self.upgrades,
            "tunnels_active": self.tunnels_active,
            "handoffs": self.handoffs,
            "handoff_failures": self.handoff_failures,
            "head_timeouts_408": self.head_timeouts,
            "body_timeouts_408": self.body_timeouts,
            "rate_limited_429": self.rate_limited,
            "session_limited_429": self.session_limited,
            "proxy_protocol_errors_400": self.proxy_protocol_errors,
        }


class _HandedOff(web.StreamResponse):
    """What the handler returns for a connection that now belongs to a worker: nothing is sent."""

    async def prepare(self, request: web.BaseRequest) -> None:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


_HANDED_OFF = _HandedOff()


def _json_error(status: int, message: str) -> web.Response:
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


class _BodyRelay:
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


async def _relay_response(request: web.BaseRequest,
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
        self._sessions: dict[tuple[int, int], aiohttp.ClientSession] = {}
        self._pools: dict[tuple[int, int], UpstreamPool] = {}
        rate = limits.handshake_rate_per_ip
        self.handshake_limiter = KeyedLimiter(rate, max(1.0, 2 * rate)) if rate else None
        self.sessions = SessionLedger()
        self._engineio_path = ""
        self._engineio_path_bytes = b""
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=config.connect_timeout_s,
            sock_read=config.upstream_timeout_s,
        )

    def make_server(self, **kwargs: Any) -> web.Server:
        """aiohttp's low-level server: every request goes to :meth:`handle`, with
        no router or middleware in between (this is the hot path)."""
        return web.Server(self.handle, **kwargs)

    async def close(self) -> None:
        self.hosts.close()
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        sessions = list(self._sessions.values())
        self._sessions.clear()
        for s in sessions:
            await s.close()

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
        session = self._sessions.pop((slot, generation), None)
        if session is not None:
            asyncio.get_running_loop().create_task(session.close())

    def _session(self, slot: int, generation: int) -> aiohttp.ClientSession:
        session = self._sessions.get((slot, generation))
        if session is not None:
            return session
        connector = aiohttp.UnixConnector(
            path=self.directory.socket_path(slot, generation), limit=0, keepalive_timeout=IDLE_S
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

    def client_address(self, request: web.BaseRequest) -> str:
        claim: ForwardClaim | None = request.get(_CLAIM)
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
            to_host = self._route_host(request, sid, host_id)
            if isinstance(to_host, web.StreamResponse):
                return to_host
            if to_host is not None:
                return await self._to_host(request, to_host)
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
            self.stats.upgrades += 1
            if self.config.websocket == "handoff" and self._hand_off_connection(request, decision):
                self.stats.handoffs += 1
                return _HANDED_OFF
            self.stats.tunnels_active += 1
            try:
                return await tunnel_upgrade(
                    request,
                    self.directory.socket_path(decision.slot, decision.generation),
                    client=client,
                    proto=proto,
                    connect_timeout_s=self.config.connect_timeout_s,
                )
            finally:
                self.stats.tunnels_active -= 1
        started = time.monotonic()
        response = await self._forward(request, decision, client, proto)
        if request.path != self.directory.engineio_path:
            kind = "app"
        elif decision.new_session:
            kind = "handshake"
        else:
            kind = "poll" if request.method == "GET" else "send"
        self.stats.latency[kind].observe(time.monotonic() - started)
        return response

    # Several hosts

    def _route_host(self, request: web.BaseRequest, sid: str | None,
                    host_id: str) -> str | web.StreamResponse | None:
        """The peer host to forward to, an answer, or None to serve it here."""
        claimed = request.headers.get(FORWARD_HEADER)
        if claimed is not None:
            claim = self.hosts.verify(claimed, request.method, request.raw_path)
            if claim is None:
                log.warning("refused a request claiming to be forwarded by another host, "
                            "from %s", request.remote)
                return _json_error(403, "not a genuine forward from a host of this cluster")
            request[_CLAIM] = claim
        decision = route_host(sid, host=host_id, live_hosts=self.directory.live_hosts(),
                              forwarded=claimed is not None)
        if isinstance(decision, Reject):
            self.stats.session_unknown += 1
            return web.Response(status=decision.status, body=decision.body,
                                content_type=decision.content_type)
        return decision.host if isinstance(decision, ToHost) else None

    async def _to_host(self, request: web.BaseRequest, host: str) -> web.StreamResponse:
        address = self.directory.peer_address(host)
        if address is None:
            self.stats.session_unknown += 1
            return web.Response(status=400, body=SESSION_UNKNOWN.body,
                                content_type=SESSION_UNKNOWN.content_type)
        client = self.client_address(request)
        signed = self.hosts.sign(self.directory.host_id, request.method, request.raw_path,
                                 client)
        proto = request.scheme
        if request.headers.get(hdrs.UPGRADE, "").lower() == "websocket":
            self.stats.upgrades += 1
            self.stats.tunnels_active += 1
            self.hosts.stats(host).upgrades += 1
            try:
                response = await tunnel_upgrade(
                    request, split_address(address), client=client, proto=proto,
                    connect_timeout_s=self.config.connect_timeout_s, extra=(signed,),
                )
            finally:
                self.stats.tunnels_active -= 1
            self.directory.note_peer(host, None if response.status == 101 else
                                     f"upgrade answered {response.status}")
            return response
        body = await self._read_body_within(request)
        if isinstance(body, web.StreamResponse):
            return body
        extra = [*forwarded(client, proto), signed,
                 b"Content-Length: " + str(len(body or b"")).encode()]
        head = request_head(request.method, request.raw_path, request.raw_headers,
                            drop=_HOP_BY_HOP_BYTES | {FORWARD_HEADER_BYTES}, extra=extra)
        started = time.monotonic()
        try:
            upstream = await self.hosts.request(host, address, head, body or b"")
        except UpstreamError as exc:
            self.directory.note_peer(host, str(exc))
            log.warning("host %s at %s unreachable: %s", host, address, exc)
            if isinstance(exc, UpstreamUnreachable):
                # Nothing listens there: the host is gone even if its lease is
                # not expired yet.  Its sessions are too, so say so at once.
                self.stats.session_unknown += 1
                return web.Response(status=400, body=SESSION_UNKNOWN.body,
                                    content_type=SESSION_UNKNOWN.content_type)
            self.stats.upstream_errors += 1
            return _json_error(502, f"host {host} unavailable")
        self.directory.note_peer(host, None)
        self.stats.latency["forward"].observe(time.monotonic() - started)
        headers: CIMultiDict[str] = CIMultiDict(
            (k, v) for k, v in upstream.headers if k.lower() not in HOP_BY_HOP
        )
        return web.Response(
            status=upstream.status, reason=upstream.reason, headers=headers, body=upstream.body
        )

    async def _read_body_within(self, request: web.BaseRequest) -> bytes | web.StreamResponse:
        """The whole body (limits and the idle timeout applied), or the error answer."""
        idle = self.limits.idle_timeout_s
        try:
            async with asyncio.timeout(idle or None):
                body = await self._read_body(request, stream_large=False)
        except asyncio.IncompleteReadError:
            return _json_error(400, "request body shorter than Content-Length")
        except TimeoutError:
            return await self._body_too_slow(request)
        assert body is not None
        return body

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

    async def _forward_engineio(
        self, request: web.BaseRequest, decision: Forward, client: str, proto: str, body: bytes
    ) -> web.StreamResponse:
        """The polling hot path: one write out, one small answer back (see upstream.py)."""
        pool = self.pool(decision.slot, decision.generation)
        extra = forwarded(client, proto)
        if body or request.method == "POST":
            extra.append(b"Content-Length: " + str(len(body)).encode())
        head = request_head(request.method, request.raw_path, request.raw_headers,
                            drop=_HOP_BY_HOP_BYTES, extra=extra)
        try:
            upstream = await pool.request(head, body)
        except UpstreamError as exc:
            self.stats.upstream_errors += 1
            log.debug("worker %d unreachable: %s", decision.slot, exc)
            return _json_error(502, "worker unavailable")
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
        limit = self.limits.max_message_bytes
        if length is not None:
            if (stream_large and length > _STREAM_BODY_OVER
                    and request.path != self.directory.engineio_path):
                return None
            if limit and length > limit:
                self.stats.too_large += 1
                return _json_error(413, f"request body over {limit} bytes")
            return await request.content.readexactly(length) if length else b""
        # Chunked: python-engineio would read it as empty, so buffer it (bounded).
        data = await request.content.read(limit + 1 if limit else -1)
        if limit and len(data) > limit:
            self.stats.too_large += 1
            return _json_error(413, f"request body over {limit} bytes")
        return data

    async def _forward(
        self, request: web.BaseRequest, decision: Forward, client: str, proto: str
    ) -> web.StreamResponse:
        idle = self.limits.idle_timeout_s
        try:
            if idle and not request.content.is_eof():
                # The body is still arriving: a client may not trickle it forever.
                async with asyncio.timeout(idle):
                    body = await self._read_body(request)
            else:
                body = await self._read_body(request)
        except asyncio.IncompleteReadError:
            return _json_error(400, "request body shorter than Content-Length")
        except TimeoutError:
            return await self._body_too_slow(request)
        if isinstance(body, web.Response):
            return body
        if body is not None and request.path == self.directory.engineio_path:
            return await self._forward_engineio(request, decision, client, proto, body)
        headers = forward_headers(request.headers.items(), client, proto)
        data: Any
        relay: _BodyRelay | None = None
        if body is None:
            headers[hdrs.CONTENT_LENGTH] = str(request.content_length)
            if idle:
                data = relay = _BodyRelay(request.content, idle)
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
                return await _relay_response(request, upstream)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            if relay is not None and relay.stalled:
                return await self._body_too_slow(request)
            self.stats.upstream_errors += 1
            log.debug("worker %d unreachable: %r", decision.slot, exc)
            return _json_error(502, "worker unavailable")

    async def _body_too_slow(self, request: web.BaseRequest) -> web.StreamResponse:
        """408 for a body that stopped arriving, and close now (aiohttp would
        otherwise linger up to 10 s reading the rest)."""
        self.stats.body_timeouts += 1
        too_slow = _json_error(
            408, f"request body not received within {self.limits.idle_timeout_s:g}s"
        )
        too_slow.force_close()
        await too_slow.prepare(request)
        await too_slow.write_eof()
        if request.transport is not None:
            request.transport.close()
        return too_slow

    def _hand_off_connection(self, request: web.BaseRequest, decision: Forward) -> bool:
        """Pass a keep-alive connection whose next request is an upgrade to its worker.

        aiohttp has already read this head, so it travels with the descriptor
        and the worker feeds it to its parser.  The client sends nothing more
        before the 101, so nothing else is in flight.  Our copy of the
        descriptor is then closed without a shutdown, which leaves the
        connection to the worker.
        """
        channel = self.directory.handoff_channel(decision.slot, decision.generation)
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
        claim: ForwardClaim | None = request.get(_CLAIM)
        if claim is not None:
            named = (claim.client_ip, claim.client_port)
        try:
            socket.send_fds(channel, [encode_handoff(head, named)], [raw.fileno()])
        except OSError:
            self.stats.handoff_failures += 1
            return False
        request.protocol.force_close()
        transport.abort()
        return True

    def status(self) -> dict[str, Any]:
        return self.stats.as_dict()
