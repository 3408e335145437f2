"""The admin listener: /health, /status, /metrics, and control actions.

``/health`` is 200 while at least one worker is ready (``"ok"``, or
``"degraded"`` with reasons when a slot is backing off or failed, or the
adapter lost its backend) and 503 when none is.  It needs no token, so load
balancers and Kubernetes probes can use it; everything else needs
``Authorization: Bearer <[admin] token>`` when a token is set.  No secret is
ever part of a response.  ``POST /emit`` emits to clients (:mod:`.emit`).
``/dashboard`` is a live page of all this (:mod:`.dashboard`); the page
itself holds no data and needs no token, its stream does.

A browser sends ``Origin`` with every cross-site POST; the listener refuses
(403) a POST whose ``Origin`` is not its own, so another site open in the
operator's browser cannot reload or stop a cluster whose admin listener
has no token (loopback).  Clients that are not browsers send no ``Origin``.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from balancer.proxy import LATENCY_BUCKETS_S

from .commands import Reload, Scale, Stop
from .dashboard import PUBLIC_PATHS, DashboardCollector, add_dashboard_routes
from .emit import EmitError, parse_body
from .fdlimit import FdUsage, fd_pressure
from .handle import SlotRecord, WorkerHandle
from .recovery import worker_totals
from .state import WorkerState

if TYPE_CHECKING:
    from .master import Master

__all__ = ["evaluate_health", "make_admin_app", "same_origin", "status_document"]


def same_origin(method: str, origin: str | None, host: str | None) -> bool:
    """Pure: False for a browser's POST from another site (``Origin`` not ``http(s)://Host``)."""
    if method != "POST" or origin is None:
        return True
    scheme, _, rest = origin.partition("://")
    return scheme in ("http", "https") and host is not None and rest == host


def evaluate_health(
    handles: Sequence[WorkerHandle], slots: Iterable[SlotRecord], desired: int,
    fds: Iterable[FdUsage] = (), hosts: Sequence[str] = (),
) -> tuple[int, dict[str, Any]]:
    """Pure: the /health status code and body (``hosts``: what the host book says)."""
    ready = sum(1 for h in handles if h.state is WorkerState.READY)
    reasons: list[str] = []
    for record in slots:
        if record.slot >= desired:
            continue
        if record.parked is WorkerState.FAILED:
            reasons.append(f"slot {record.slot} failed: {record.failure_reason}")
        elif record.parked is WorkerState.BACKOFF:
            reasons.append(f"slot {record.slot} in backoff: {record.failure_reason}")
    for h in handles:
        state = h.adapter.state if h.adapter is not None else None
        if h.state is WorkerState.READY and state not in (None, "connected", "disabled"):
            reasons.append(f"worker {h.slot} adapter {state}")
    reasons += fd_pressure(fds)
    reasons += hosts
    if ready == 0:
        return 503, {"status": "unavailable", "ready": 0, "desired": desired,
                     "reasons": reasons or ["no worker is ready"]}
    if ready < desired:
        reasons.append(f"{ready} of {desired} workers ready")
    status = "degraded" if reasons else "ok"
    return 200, {"status": status, "ready": ready, "desired": desired, "reasons": reasons}


def _worker_entry(h: WorkerHandle, record: SlotRecord, now: float) -> dict[str, Any]:
    age = h.heartbeat_age(now)
    return {
        "slot": h.slot,
        "generation": h.generation,
        "pid": h.pid,
        "state": str(h.state),
        "restarts": record.restarts,
        "last_exit": record.last_exit,
        "started_at": round(h.started_at, 3),
        "connections": h.connections,
        "heartbeat_age_s": None if age is None else round(age, 3),
        "loop_lag_s": h.loop_lag_s,
        "rss_bytes": h.sample.get("rss_bytes"),
        "cpu_percent": h.sample.get("cpu_percent"),
        "fds": h.sample.get("fds"),
        "fd_limit": h.sample.get("fd_limit"),
        "threads": h.sample.get("threads"),
        "guards": h.guards,
    }


def status_document(master: Master) -> dict[str, Any]:
    now = time.monotonic()
    workers: list[dict[str, Any]] = []
    for slot in sorted(master.slots):
        record = master.slots[slot]
        handles = sorted((h for h in master.handles if h.slot == slot), key=lambda h: h.generation)
        for h in handles:
            workers.append(_worker_entry(h, record, now))
        if not handles:
            workers.append({
                "slot": slot, "generation": None, "pid": None,
                "state": str(record.parked or WorkerState.DEAD),
                "restarts": record.restarts, "last_exit": record.last_exit,
                "started_at": None, "connections": 0, "heartbeat_age_s": None,
                "reason": record.failure_reason,
            })
    _code, health = evaluate_health(master.handles, master.slots.values(), master.desired,
                                    master.fd_usage(), _host_reasons(master))
    adapters = [
        {"slot": h.slot, "pid": h.pid, **h.adapter.document()} for h in master.handles
        if h.adapter is not None
    ]
    return {
        "app": master.app,
        "runtime_dir": master.runtime_dir,
        "listen": {"port": master.ports[0], "admin_port": master.ports[1]},
        "master": {**master.master_sample(), "started_at": round(master.started_at, 3),
                   "uptime_s": round(time.time() - master.started_at, 1),
                   "workers_desired": master.desired},
        "health": health,
        "workers": workers,
        "balancer": master.balancer.status(),
        "adapter": {"backend": master.config.adapter.backend, "workers": adapters},
        "restarts_by_cause": dict(master.restart_causes),
        "singletons": master.singletons.status(time.time()),
        "recovery": _recovery_status(master),
        "hosts": [] if master.hosts is None else master.hosts.book.status(time.monotonic()),
    }


def _recovery_status(master: Master) -> dict[str, Any]:
    backend = master.config.adapter.backend
    if master.recovery is not None:
        return {"enabled": True, "backend": backend,
                **master.recovery.status(h.recovery for h in master.handles)}
    if master.config.recovery.enabled:  # redis: the workers count, Redis holds
        return {"enabled": True, "backend": backend, "window_s":
                master.config.recovery.max_disconnection_s,
                **worker_totals(h.recovery for h in master.handles)}
    return {"enabled": False}



def _host_reasons(master: Master) -> list[str]:
    return [] if master.hosts is None else master.hosts.book.reasons()


class _MasterCollector(Collector):
    def __init__(self, master: Master) -> None:
        self.master = master

    def collect(self) -> Iterable[Metric]:
        m = self.master
        by_state = GaugeMetricFamily(
            "siocluster_workers", "Worker processes by state", labels=["state"]
        )
        for state in WorkerState:
            count = sum(1 for h in m.handles if h.state is state)
            count += sum(1 for r in m.slots.values() if r.parked is state)
            by_state.add_metric([str(state)], count)
        yield by_state
        restarts = CounterMetricFamily(
            "siocluster_worker_restarts", "Worker restarts by cause", labels=["cause"]
        )
        for cause, count in sorted(m.restart_causes.items()):
            restarts.add_metric([str(cause)], count)
        yield restarts
        conns = GaugeMetricFamily(
            "siocluster_connections", "Engine.IO sessions per worker slot", labels=["slot"]
        )
        for h in m.handles:
            conns.add_metric([str(h.slot)], h.connections)
        yield conns
        open_fds = GaugeMetricFamily(
            "siocluster_open_fds", "Open file descriptors", labels=["role", "slot"]
        )
        max_fds = GaugeMetricFamily(
            "siocluster_max_fds", "Open file descriptor limit (soft RLIMIT_NOFILE)",
            labels=["role", "slot"],
        )
        for usage in m.fd_usage():
            role, _, slot = usage.who.partition(" ")
            open_fds.add_metric([role, slot], usage.fds)
            if usage.limit:
                max_fds.add_metric([role, slot], usage.limit)
        yield open_fds
        yield max_fds
        stats = m.balancer.stats
        for name, doc, value in (
            ("siocluster_balancer_requests", "HTTP requests received", stats.requests),
            ("siocluster_balancer_handshakes", "New sessions routed", stats.handshakes),
            ("siocluster_balancer_session_unknown", "Stale sids answered 400",
             stats.session_unknown),
            ("siocluster_balancer_no_worker", "Requests answered 503", stats.no_worker),
            ("siocluster_balancer_upstream_errors", "Requests answered 502", stats.upstream_errors),
            ("siocluster_balancer_upgrades", "WebSocket upgrades", stats.upgrades),
        ):
            counter = CounterMetricFamily(name, doc)
            counter.add_metric([], value)
            yield counter
        tunnels = GaugeMetricFamily("siocluster_balancer_tunnels", "WebSocket tunnels open")
        tunnels.add_metric([], stats.tunnels_active)
        yield tunnels
        for name, doc, value in (
            ("siocluster_balancer_handoffs", "WebSocket sockets passed to workers",
             stats.handoffs),
            ("siocluster_balancer_head_timeouts", "Connections closed for a slow head (408)",
             stats.head_timeouts),
            ("siocluster_balancer_rate_limited", "New sessions refused by the rate limit (429)",
             stats.rate_limited),
            ("siocluster_balancer_body_timeouts",
             "Requests answered 408 for a body not received within idle_timeout_s",
             stats.body_timeouts),
            ("siocluster_balancer_session_limited",
             "New sessions refused by max_sessions_per_ip (429)", stats.session_limited),
            ("siocluster_balancer_proxy_protocol_errors",
             "Connections refused for a missing or bad PROXY header", stats.proxy_protocol_errors),
        ):
            counter = CounterMetricFamily(name, doc)
            counter.add_metric([], value)
            yield counter
        latency = HistogramMetricFamily(
            "siocluster_proxy_request_seconds", "Proxied HTTP request latency", labels=["kind"]
        )
        for kind, hist in stats.latency.items():
            cumulative, buckets = 0, []
            for bound, count in zip((*LATENCY_BUCKETS_S, float("inf")), hist.counts,
                                    strict=True):
                cumulative += count
                buckets.append((str(bound) if bound != float("inf") else "+Inf", cumulative))
            latency.add_metric([kind], buckets, hist.total_s)
        yield latency
        messages = CounterMetricFamily(
            "siocluster_messages_received", "Engine.IO messages received, per worker slot",
            labels=["slot"],
        )
        adapter: dict[str, GaugeMetricFamily] = {}
        guards = CounterMetricFamily(
            "siocluster_guard_events", "Auth results, rate-limited events and typed-payload "
            "checks, per worker slot", labels=["slot", "kind"],
        )
        for h in m.handles:
            for kind, count in sorted(h.guards.items()):
                guards.add_metric([str(h.slot), kind], count)
            messages.add_metric([str(h.slot)], h.messages_total)
            for key, value in (h.adapter.gauges() if h.adapter is not None else {}).items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    family = adapter.setdefault(key, GaugeMetricFamily(
                        f"siocluster_adapter_{key}", f"Cross-worker adapter: {key}",
                        labels=["slot"]))
                    family.add_metric([str(h.slot)], value)
        yield messages
        yield guards
        yield from adapter.values()
        yield from _singleton_metrics(m)
        yield from _emit_metrics(m)
        yield from _recovery_metrics(m)
        if m.hosts is not None:
            yield from _host_metrics(m)


def _recovery_metrics(m: Master) -> Iterable[Metric]:
    if not m.config.recovery.enabled:
        return
    st = _recovery_status(m)
    backend = [m.config.adapter.backend]
    recovered = CounterMetricFamily(
        "siocluster_recovery_recovered", "Connections recovered (sid, rooms, data, missed "
        "packets)", labels=["backend"])
    recovered.add_metric(backend, st["recovered"])
    yield recovered
    failed = CounterMetricFamily(
        "siocluster_recovery_not_recovered", "Recovery attempts answered with a fresh "
        "session, by reason", labels=["backend", "reason"])
    for reason, count in sorted(st["not_recovered"].items()):
        failed.add_metric([*backend, reason], count)
    yield failed
    for key, kind, doc in (
        ("replayed", "counter", "Packets replayed to recovered connections"),
        ("appended", "counter", "Packets appended to the recovery log"),
        ("trimmed_age", "counter", "Log packets trimmed by age"),
        ("trimmed_size", "counter", "Log packets trimmed by size (max_log_bytes)"),
        ("log_bytes", "gauge", "Bytes held by the recovery log"),
        ("log_entries", "gauge", "Packets held by the recovery log"),
        ("log_oldest_age_s", "gauge", "Age of the oldest packet in the recovery log"),
        ("sessions", "gauge", "Sessions the recovery store holds"),
        ("sessions_disconnected", "gauge", "Disconnected sessions still recoverable"),
    ):
        family: CounterMetricFamily | GaugeMetricFamily
        if kind == "counter":
            family = CounterMetricFamily(f"siocluster_recovery_{key}", doc, labels=["backend"])
        else:
            family = GaugeMetricFamily(f"siocluster_recovery_{key}", doc, labels=["backend"])
        if key in st:
            family.add_metric(backend, st[key])
            yield family


def _host_metrics(m: Master) -> Iterable[Metric]:
    link = m.balancer.hosts
    requests = CounterMetricFamily(
        "siocluster_forwarded_requests", "Requests forwarded to the host their sid names, "
        "by peer host and kind (http, websocket)", labels=["peer", "kind"],
    )
    sent = CounterMetricFamily(
        "siocluster_forwarded_bytes", "Bytes of forwarded HTTP requests and their answers, "
        "by peer host", labels=["peer", "direction"],
    )
    errors = CounterMetricFamily(
        "siocluster_forward_errors", "Forwards a peer host did not answer (502)",
        labels=["peer"],
    )
    for peer, stats in sorted(link.peers.items()):
        requests.add_metric([peer, "http"], stats.requests)
        requests.add_metric([peer, "websocket"], stats.upgrades)
        sent.add_metric([peer, "out"], stats.bytes_out)
        sent.add_metric([peer, "in"], stats.bytes_in)
        errors.add_metric([peer], stats.errors)
    refused = CounterMetricFamily(
        "siocluster_forwards_refused", "Requests that claimed to be forwarded by a host of "
        "the cluster and failed the check (403)",
    )
    refused.add_metric([], link.refused)
    hosts = GaugeMetricFamily("siocluster_hosts", "Live hosts of the cluster, this one included")
    hosts.add_metric([], len(m.live_hosts()))
    yield from (requests, sent, errors, refused, hosts)


def _singleton_metrics(m: Master) -> Iterable[Metric]:
    handovers = CounterMetricFamily(
        "siocluster_singleton_handovers", "@singleton leases that moved to a new tenure",
        labels=["name"],
    )
    held = GaugeMetricFamily(
        "siocluster_singleton_held", "1 while a @singleton's holder is known", labels=["name"]
    )
    for name, view in sorted(m.singletons.current.items()):
        handovers.add_metric([name], m.singletons.handovers.get(name, 0))
        held.add_metric([name], 0 if view is None else 1)
    yield handovers
    yield held


def _emit_metrics(m: Master) -> Iterable[Metric]:
    """Emits by source, each counted once: ``internal`` and ``amqp`` are emitted by
    one worker each (summed); every worker hears each ``redis-emitter`` message
    (the highest count is shown); ``http`` is counted here, in the master."""
    emits = CounterMetricFamily(
        "siocluster_emits", "Emits by source (internal, redis-emitter, http, amqp)",
        labels=["source"],
    )
    totals = {"internal": 0, "redis-emitter": 0, "amqp": 0}
    for h in m.handles:
        for source, count in h.emits.items():
            if source == "redis-emitter":
                totals[source] = max(totals[source], count)
            elif source != "http":
                totals[source] = totals.get(source, 0) + count
    totals["http"] = m.emit_relay.accepted
    for source, count in sorted(totals.items()):
        emits.add_metric([source], count)
    yield emits
    refused = CounterMetricFamily(
        "siocluster_external_refused",
        "Messages from outside the cluster refused (pickle, malformed, unsupported), "
        "per worker slot", labels=["slot", "source", "reason"],
    )
    for h in m.handles:
        for key, count in sorted(h.external_refused.items()):
            source, _, reason = key.partition("/")
            refused.add_metric([str(h.slot), source, reason], count)
    yield refused
    failed = CounterMetricFamily(
        "siocluster_http_emit_failures", "POST /emit answered 502/503/504 after a valid body"
    )
    failed.add_metric([], m.emit_relay.failed)
    yield failed


def scale_request(body: Any) -> int | None:
    """The worker count a POST /scale body asks for, or None when it is not valid."""
    try:
        workers = int(body["workers"])
    except (ValueError, KeyError, TypeError):
        return None
    return workers if 1 <= workers <= 256 else None


def _auth_middleware(token: str) -> Any:
    """Same-origin POSTs only; the bearer token on all but /health and the public pages."""

    def authorized(request: web.Request) -> bool:
        if not token:
            return True
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    @web.middleware
    async def auth(request: web.Request, handler: Any) -> web.StreamResponse:
        if not same_origin(request.method, request.headers.get("Origin"), request.host):
            return web.json_response({"error": "cross-origin request refused"}, status=403)
        public = request.path == "/health" or (
            request.method == "GET" and request.path in PUBLIC_PATHS)
        if not public and not authorized(request):
            return web.json_response(
                {"error": "missing or wrong bearer token"}, status=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        response: web.StreamResponse = await handler(request)
        return response

    return auth


def make_admin_app(master: Master) -> web.Application:
    registry = CollectorRegistry()
    registry.register(_MasterCollector(master))
    auth = _auth_middleware(master.config.admin.token)

    async def health(_request: web.Request) -> web.Response:
        code, body = evaluate_health(master.handles, master.slots.values(), master.desired,
                                     master.fd_usage(), _host_reasons(master))
        return web.json_response(body, status=code)

    async def status(_request: web.Request) -> web.Response:
        return web.json_response(status_document(master))

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), content_type="text/plain", charset="utf-8"
        )

    async def reload(_request: web.Request) -> web.Response:
        master.commands.put_nowait(Reload())
        return web.json_response({"ok": True, "action": "reload"}, status=202)

    async def stop(_request: web.Request) -> web.Response:
        master.commands.put_nowait(Stop())
        return web.json_response({"ok": True, "action": "stop"}, status=202)

    async def scale(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        workers = scale_request(body)
        if workers is None:
            return web.json_response(
                {"error": 'body must be {"workers": N} with 1 <= N <= 256'}, status=400
            )
        master.commands.put_nowait(Scale(workers))
        return web.json_response({"ok": True, "action": "scale", "workers": workers}, status=202)

    async def emit(request: web.Request) -> web.Response:
        try:
            body, args = parse_body(await request.read())
            workers = await master.emit(body, args)
        except EmitError as exc:
            return web.json_response({"error": exc.reason}, status=exc.status)
        return web.json_response({"ok": True, "workers": workers})

    app = web.Application(middlewares=[auth],
                          client_max_size=master.config.limits.max_message_bytes or 1024**2)
    app.router.add_get("/health", health)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/reload", reload)
    app.router.add_post("/stop", stop)
    app.router.add_post("/scale", scale)
    app.router.add_post("/emit", emit)
    registry.register(DashboardCollector(add_dashboard_routes(app, master, status_document)))
    return app
