"""The public HTTP/1.1 server: routing each request by sid.

This is the master's hot path (``[balancer] http = "httptools"``, the default).
Each client connection gets one :class:`FrontProtocol`, an
:class:`balancer.httpconn.HttpConnection` (httptools' parser, the head and body
limits, the timers, pipelining).  Each complete request is routed on its own
(:func:`balancer.routing.route`), so one keep-alive connection (nginx's, say)
can carry the requests of sessions that live on different workers; it is then:

* refused right here: 400 for an unknown sid, 503 with no worker ready, 429
  past a handshake rate or session cap (the same decisions as
  :meth:`balancer.proxy.Balancer.admit`), 413 for a body over
  ``max_message_bytes``, 414/431 for a head over ``max_header_bytes`` or with
  more than ``max_header_count`` headers;
* or sent whole (bodies are buffered: python-engineio reads Content-Length,
  and a chunked body reaches it with one) to the owner worker's Unix socket
  through :class:`balancer.upstream.UpstreamPool`, whose answer is written back
  as it arrives, with backpressure both ways;
* or, with several hosts, sent to the host its sid names
  (:mod:`balancer.hostforward`), signed;
* or, for a WebSocket upgrade, handed off to its worker with the head it
  carried (``SCM_RIGHTS``, as the front door does for a first request);
* or, a polling request whose connection's last requests went to one worker,
  handed off with the connection to that worker (:mod:`balancer.stickiness`).

What this layer does not serve itself goes to aiohttp's server
(:mod:`balancer.proxy`), which takes over the connection with the bytes of the
request re-sent to it: an upgrade in ``websocket = "tunnel"`` mode, or one
whose handoff failed, an upgrade to another host, and a request to the app's
own routes with a body over 256 KB (streamed to the worker, as before).  All
are rare, and the connection stays with aiohttp afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .answer import Answer
from .exceptions import UpstreamError, UpstreamUnreachable
from .forwarding import resolve_client
from .handoff import POLLING, encode_handoff, encode_passed
from .hostforward import FORWARD_HEADER_BYTES
from .httpconn import HttpConnection
from .httpmsg import Request, error_response, json_error, response_head
from .peer import Peer
from .peerauth import ForwardClaim
from .routing import SESSION_UNKNOWN, Forward, Reject, ToHost, extract_sid, route, route_host
from .stickiness import hand_off_now, streak_after

if TYPE_CHECKING:
    from .proxy import Balancer
    from .upstream import Exchange, UpstreamPool

__all__ = ["FrontProtocol", "error_response", "response_head"]

log = logging.getLogger("siocluster.balancer")

# App-route bodies over this are streamed, by aiohttp's server (see the docstring).
STREAM_BODY_OVER = 256 * 1024
_FORWARDED_PROTO = b"X-Forwarded-Proto: http"
# A polling request larger than this is relayed, not passed with its connection.
_PASS_AT_MOST = 64 * 1024


class FrontProtocol(HttpConnection):
    def __init__(self, balancer: Balancer, peer: Peer | None,
                 fallback: Callable[[], asyncio.Protocol], returns: int = 0) -> None:
        """``peer``: the client a PROXY header named (None: the socket's peer).
        ``fallback``: aiohttp's protocol, for what this layer does not serve.
        ``returns``: how many times workers gave this connection back."""
        super().__init__(balancer.limits, balancer.stats)
        self._b = balancer
        self._peer = peer
        self._fallback = fallback
        self._client_ip = ""
        self._exchange: Exchange | None = None
        self._started = 0.0
        self._kind = ""
        self._to_peer = ""  # several hosts: the peer host this answer comes from
        self._claim: ForwardClaim | None = None  # a verified forward's client
        self._reply = Answer()  # the answer being written
        # balancer.stickiness: the worker of the last requests, how many in a row.
        self._returns = returns
        self._last_owner: tuple[int, int] | None = None
        self._streak = 0
        self._passing: Forward | None = None  # to pass once this read is parsed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._peer is not None:
            self._client_ip = self._peer[0]
        else:
            peername = transport.get_extra_info("peername")
            self._client_ip = str(peername[0]) if peername else ""

    # HttpConnection's hooks

    def _streams(self, req: Request) -> bool:
        return (req.length is not None and req.length > STREAM_BODY_OVER
                and req.url.partition(b"?")[0] != self._b.engineio_path_bytes())

    def _stop_answer(self) -> None:
        if self._exchange is not None:
            self._exchange.abort()
            self._exchange = None

    def _answer_paused(self, paused: bool) -> None:
        if self._exchange is not None:
            if paused:
                self._exchange.pause_reading()
            else:
                self._exchange.resume_reading()

    def _stream(self, req: Request) -> None:
        """A large body to the app's routes: aiohttp's server streams it."""
        if self._active is not None or self._queue:
            self._transport.close()  # a pipelined upload behind an answer: not served
            return
        self._to_aiohttp(req.head() + bytes(req.body))

    # serving

    def _serve(self, req: Request) -> None:
        b = self._b
        if req.upgrade and b.config.websocket != "handoff":
            self._to_aiohttp(req.head() + req.rest)
            return
        b.stats.requests += 1
        if req.upgrade:
            # Past its head the parser reads no more HTTP: a refused upgrade
            # (400, 429, 503) closes the connection after its answer.
            req.keep_alive = False
        path, _, query = req.url.partition(b"?")
        sid = extract_sid(query.decode("latin-1")) if b"sid=" in query else None
        host_id = b.directory.host_id
        self._claim = None
        # A run of polling requests for one worker: anything else ends it.
        last, self._last_owner = self._last_owner, None
        if host_id and self._route_host(req, sid, host_id):
            return
        decision = route(sid, b.directory.views(), host_id)
        if isinstance(decision, Reject):
            if decision.status == 400:
                b.stats.session_unknown += 1
            else:
                b.stats.no_worker += 1
            self._answer(error_response(decision.status, decision.body,
                                        content_type=decision.content_type.encode(),
                                        close=not req.keep_alive))
            return
        client = self._client(req)
        engineio = path == b.engineio_path_bytes()
        if decision.new_session and engineio and not self._admitted(req, client, decision):
            return
        if req.upgrade:
            b.stats.upgrades += 1
            if not self._hand_off(req, decision):
                self._to_aiohttp(req.head() + req.rest)
            return
        moves = False
        if not engineio:
            self._kind = "app"
        elif decision.new_session:
            self._kind = "handshake"  # admitted: a fresh connection moves with it
            moves = self._returns == 0 and req.method == b"GET" and self._movable(req)
        else:
            self._kind = "poll" if req.method == b"GET" else "send"
            moves = self._sticks(req, decision, last)
        if moves:
            if self._feeding:
                # Passed once the parser is done with this read: a pipelined
                # request behind it may be in the same bytes.
                self._passing = decision
                return
            if not self._queue and self._phase_idle() and self._pass_polling(req, decision):
                return
        self._relay(req, decision, client)

    def _relay(self, req: Request, decision: Forward, client: str) -> None:
        data = req.upstream([b"X-Forwarded-For: " + client.encode("latin-1"), _FORWARDED_PROTO])
        self._send(req, self._b.pool(decision.slot, decision.generation), data)

    def _fed(self) -> None:
        decision, self._passing = self._passing, None
        req = self._active
        if decision is None or req is None:
            return
        if self._queue or not self._phase_idle() or not self._pass_polling(req, decision):
            self._relay(req, decision, self._client(req))

    def _admitted(self, req: Request, client: str, decision: Forward) -> bool:
        """A new session past the per-address limits (counted), or answered 429 here."""
        b = self._b
        refusal = b.admit(client, decision)
        if refusal is not None:
            status, message, retry_after = refusal
            self._answer(json_error(status, message,
                                    headers=((b"Retry-After", retry_after.encode()),),
                                    close=not req.keep_alive))
            return False
        b.directory.note_handshake(decision.slot, decision.generation)
        b.stats.handshakes += 1
        return True

    def _send(self, req: Request, pool: UpstreamPool, data: bytes) -> None:
        self._started = time.monotonic()
        self._reply.reset(close=not req.keep_alive)
        self._exchange = pool.exchange(data, self, head_only=req.method == b"HEAD")
        if self._writing_paused and self._exchange is not None:
            self._exchange.pause_reading()

    def _client(self, req: Request) -> str:
        """The client's address: vouched for by another host, or resolved here."""
        if self._claim is not None:
            return self._claim.client_ip
        b = self._b
        if b.trusted and req.xff is not None:
            return resolve_client(self._client_ip, req.xff.decode("latin-1"), b.trusted)
        return self._client_ip

    # several hosts, one cluster (balancer.hostforward)

    def _route_host(self, req: Request, sid: str | None, host_id: str) -> bool:
        """Whether the request was answered or forwarded to another host here;
        a verified forward's claim is kept for this request."""
        b = self._b
        claimed = req.forward_claim
        if claimed is not None:
            claim = b.hosts.verify(claimed.decode("latin-1"), req.method.decode("latin-1"),
                                   req.url.decode("latin-1"))
            if claim is None:
                log.warning("refused a request claiming to be forwarded by another host, "
                            "from %s", self._client_ip)
                self._answer(json_error(
                    403, "not a genuine forward from a host of this cluster",
                    close=not req.keep_alive))
                return True
            self._claim = claim
        decision = route_host(sid, host=host_id, live_hosts=b.directory.live_hosts(),
                              forwarded=claimed is not None)
        address = None if not isinstance(decision, ToHost) else \
            b.directory.peer_address(decision.host)
        if isinstance(decision, Reject) or (decision is not None and address is None):
            b.stats.session_unknown += 1
            self._answer(error_response(SESSION_UNKNOWN.status, SESSION_UNKNOWN.body,
                                        content_type=SESSION_UNKNOWN.content_type.encode(),
                                        close=not req.keep_alive))
            return True
        if decision is None or address is None:
            return False
        if req.upgrade:
            # aiohttp's side tunnels it (Balancer.handle); a socket cannot be handed
            # to another machine, so the bytes are relayed for the session's life.
            self._to_aiohttp(req.head() + req.rest)
            return True
        client = self._client(req)
        data = req.upstream([b"X-Forwarded-For: " + client.encode("latin-1"), _FORWARDED_PROTO,
                             b.hosts.sign(b.directory.host_id, req.method.decode("latin-1"),
                                          req.url.decode("latin-1"), client)],
                            drop=FORWARD_HEADER_BYTES)
        stats = b.hosts.stats(decision.host)
        stats.requests += 1
        stats.bytes_out += len(data)
        self._kind = "forward"
        self._to_peer = decision.host
        self._send(req, b.hosts.pool(address), data)
        return True

    def _answer(self, response: bytes) -> None:
        """A whole answer from the balancer itself."""
        req = self._active
        if not self._closed:
            self._transport.write(response)
        self._exchange = None
        self._finish(close=req is None or not req.keep_alive)

    def _hand_off(self, req: Request, decision: Forward) -> bool:
        """Pass the upgrade's connection, with the head it carried, to the worker."""
        named = self._peer if self._claim is None else (self._claim.client_ip,
                                                        self._claim.client_port)
        if not self._pass(decision, encode_handoff(req.head() + req.rest, named)):
            return False
        self._b.stats.handoffs += 1
        return True

    def _sticks(self, req: Request, decision: Forward, last: tuple[int, int] | None) -> bool:
        """Count this request for its worker; whether the connection moves there now."""
        owner = (decision.slot, decision.generation)
        self._streak = streak_after(last, owner, self._streak)
        self._last_owner = owner
        return hand_off_now(self._streak, self._returns) and self._movable(req)

    def _movable(self, req: Request) -> bool:
        return (self._b.config.polling_handoff and req.keep_alive and req.version == "1.1"
                and self._claim is None and not self._closed)

    def _pass_polling(self, req: Request, decision: Forward) -> bool:
        """Pass the connection, with ``req``, to the worker that owns (or, for a
        handshake, will own) its sessions."""
        data = req.replay()
        if len(data) > _PASS_AT_MOST or not self._pass(decision, encode_passed(
                POLLING, data, self._peer, self._returns, admitted=decision.new_session)):
            return False
        self._b.stats.polling_handoffs += 1
        return True

    def _pass(self, decision: Forward, payload: bytes) -> bool:
        """Pass the socket to the worker (SCM_RIGHTS) with ``payload``; ours closes."""
        channel = self._b.directory.handoff_channel(decision.slot, decision.generation)
        raw = self._transport.get_extra_info("socket")
        if channel is None or raw is None or self._transport.get_write_buffer_size():
            return False
        try:
            socket.send_fds(channel, [payload], [raw.fileno()])
        except OSError:
            self._b.stats.handoff_failures += 1
            return False
        self._detach()
        self._active = None
        self._transport.abort()  # our copy, without a shutdown: the worker's stays open
        return True

    def _to_aiohttp(self, data: bytes) -> None:
        """Give the connection, and ``data`` (what it has sent so far that is not
        answered), to aiohttp's server for the rest of its life."""
        self._detach()
        self._active = None
        protocol = self._fallback()
        transport = self._transport
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self._paused:
            self._paused = False
            transport.resume_reading()
        protocol.data_received(data)

    # the upstream answer (balancer.upstream.Sink)

    def upstream_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]],
                      length: int | None, chunked: bool) -> None:
        if not self._closed:
            self._reply.head(status, reason, headers, length, self._active)

    def upstream_body(self, data: bytes) -> None:
        if self._to_peer:
            self._b.hosts.stats(self._to_peer).bytes_in += len(data)
        if not self._closed and (ready := self._reply.body(data)) is not None:
            self._transport.write(ready)

    def upstream_done(self) -> None:
        self._exchange = None
        if self._to_peer:
            self._b.directory.note_peer(self._to_peer, None)
            self._to_peer = ""
        if self._closed:
            return
        self._transport.write(self._reply.end())
        self._b.stats.latency[self._kind].observe(time.monotonic() - self._started)
        self._finish(close=self._reply.close)

    def upstream_failed(self, error: UpstreamError) -> None:
        self._exchange = None
        peer, self._to_peer = self._to_peer, ""
        if peer:
            self._b.hosts.stats(peer).errors += 1
            self._b.directory.note_peer(peer, str(error))
            log.warning("host %s unreachable: %s", peer, error)
        if self._closed:
            return
        if peer and isinstance(error, UpstreamUnreachable) and not self._reply.sent:
            # Nothing listens there: the host is gone even if its lease has not
            # expired yet, and so are its sessions.  Say so at once.
            self._b.stats.session_unknown += 1
            self._reply.clear()
            self._answer(error_response(SESSION_UNKNOWN.status, SESSION_UNKNOWN.body,
                                        content_type=SESSION_UNKNOWN.content_type.encode(),
                                        close=self._reply.close))
            return
        self._b.stats.upstream_errors += 1
        log.debug("worker unreachable: %s", error)
        if self._reply.sent:
            self._finish(close=True)  # part of the answer is out: only closing tells
            return
        self._reply.clear()
        self._answer(json_error(502, "worker unavailable", close=self._reply.close))
