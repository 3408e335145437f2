"""``/metrics``: the master's Prometheus collector.

Everything is read at scrape time from the master's state (worker handles
and slots, the balancer's counters and latency histograms, what workers
report in heartbeats: guards, adapter figures, emits, recovery), so nothing
is counted twice and nothing needs updating in between.  Metric names start
with ``siocluster_``; labels are the worker slot, never a pid.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from balancer.stats import LATENCY_BUCKETS_S

from .state import WorkerState
from .status import recovery_status

if TYPE_CHECKING:
    from .master import Master

__all__ = ["MasterCollector"]


class MasterCollector(Collector):
    def __init__(self, master: Master) -> None:
        self.master = master

    def collect(self) -> Iterable[Metric]:
        m = self.master
        yield from _worker_metrics(m)
        yield from _balancer_metrics(m)
        yield from _heartbeat_metrics(m)
        yield from _singleton_metrics(m)
        yield from _emit_metrics(m)
        yield from _recovery_metrics(m)
        if m.hosts is not None:
            yield from _host_metrics(m)


def _worker_metrics(m: Master) -> Iterable[Metric]:
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


def _balancer_metrics(m: Master) -> Iterable[Metric]:
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
        ("siocluster_balancer_polling_handoffs",
         "Kept-alive polling connections passed to the worker owning their sessions",
         stats.polling_handoffs),
        ("siocluster_balancer_polling_returns",
         "Polling connections a worker gave back (a request on them was not its own)",
         stats.polling_returns),
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
        "siocluster_proxy_request_seconds",
        "HTTP request latency: relayed by the master, or served by a worker's gate",
        labels=["kind"],
    )
    for kind, hist in stats.latency.items():
        cumulative, buckets = 0, []
        for bound, count in zip((*LATENCY_BUCKETS_S, float("inf")), hist.counts,
                                strict=True):
            cumulative += count
            buckets.append((str(bound) if bound != float("inf") else "+Inf", cumulative))
        latency.add_metric([kind], buckets, hist.total_s)
    yield latency


def _heartbeat_metrics(m: Master) -> Iterable[Metric]:
    """What the workers report in their heartbeats, per slot."""
    messages = CounterMetricFamily(
        "siocluster_messages_received", "Engine.IO messages received, per worker slot",
        labels=["slot"],
    )
    adapter: dict[str, GaugeMetricFamily] = {}
    guards = CounterMetricFamily(
        "siocluster_guard_events", "Auth results, rate-limited events and typed-payload "
        "checks, per worker slot", labels=["slot", "kind"],
    )
    gate = CounterMetricFamily(
        "siocluster_worker_gate", "Kept-alive polling connections a worker serves itself: "
        "requests, returns to the master, failed returns (503), refusals", labels=["slot", "kind"],
    )
    for h in m.handles:
        for kind, count in sorted(h.guards.items()):
            guards.add_metric([str(h.slot), kind], count)
        for kind, count in sorted(h.gate.items()):
            gate.add_metric([str(h.slot), kind], count)
        messages.add_metric([str(h.slot)], h.messages_total)
        for key, value in (h.adapter.gauges() if h.adapter is not None else {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                family = adapter.setdefault(key, GaugeMetricFamily(
                    f"siocluster_adapter_{key}", f"Cross-worker adapter: {key}",
                    labels=["slot"]))
                family.add_metric([str(h.slot)], value)
    yield messages
    yield guards
    yield gate
    yield from adapter.values()


def _recovery_metrics(m: Master) -> Iterable[Metric]:
    if not m.config.recovery.enabled:
        return
    st = recovery_status(m)
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
        ("lag_waits", "counter", "Log entries the master held back while a worker lagged "
                                 "(local backend)"),
        ("lag_timeouts", "counter", "Lagging workers the master stopped waiting for "
                                    "(local backend)"),
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
        "Messages from outside the cluster refused (pickle, malformed, unsupported) or "
        "dropped by RabbitMQ for age (expired), "
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
