"""The balancer's counters and latency histograms, read by /status, /metrics and the dashboard.

Plain integers and lists, updated on the hot paths (:mod:`balancer.front`,
:mod:`balancer.proxy`, :mod:`balancer.frontdoor`) without locks: everything
runs on the master's one event loop.  :data:`LATENCY_BUCKETS_S` are the
histogram's upper bounds; the supervisor renders them (``/metrics``) and
charts them (the dashboard).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LATENCY_BUCKETS_S", "BalancerStats", "Latency"]


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

    def absorb(self, before: Sequence[int], before_s: float, now: Sequence[int],
               now_s: float) -> bool:
        """Add what another process's cumulative histogram gained from ``before`` to
        ``now`` (a worker's gate reports its own in every heartbeat).  False, and
        nothing added, when ``now`` does not fit: another length, or a count that
        went back."""
        if len(now) != len(self.counts) or len(before) not in (0, len(now)):
            return False
        gained = [n - b for n, b in zip(now, before, strict=True)] if before else list(now)
        if any(g < 0 for g in gained) or now_s < before_s:
            return False
        self.counts = [c + g for c, g in zip(self.counts, gained, strict=True)]
        self.total_s += now_s - before_s
        return True


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
    polling_handoffs: int = 0  # kept-alive polling connections passed to a worker
    polling_returns: int = 0  # ... and given back by one
    head_timeouts: int = 0
    body_timeouts: int = 0
    rate_limited: int = 0
    session_limited: int = 0
    proxy_protocol_errors: int = 0
    # Request latency by kind: "handshake", "poll" (GET with sid), "send" (POST with
    # sid), "app" (everything else) and "forward" (to another host).  Relayed here,
    # or served by a worker's gate (worker/gate.py: its heartbeats bring them in).
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
            "polling_handoffs": self.polling_handoffs,
            "polling_returns": self.polling_returns,
            "head_timeouts_408": self.head_timeouts,
            "body_timeouts_408": self.body_timeouts,
            "rate_limited_429": self.rate_limited,
            "session_limited_429": self.session_limited,
            "proxy_protocol_errors_400": self.proxy_protocol_errors,
        }
