"""The last ten minutes of the cluster, one point a second, for the dashboard's charts.

Theory of operation
-------------------
The master keeps cumulative counters (messages received per worker, handshakes
routed, a latency histogram, restarts by cause).  Once a second the
dashboard's ticker reads them into a :class:`Totals` snapshot; the pure
:func:`make_point` turns two consecutive snapshots into one :class:`Point`
(rates per second, latency quantiles of the requests in between) and
:class:`History` keeps the last ``maxlen`` points in a ring.  Nothing here
reads a clock or touches a socket: ``tests/supervisor/test_history.py``
drives it with plain values.

Counters are per ``(slot, generation)``: a replacement worker starts at 0,
so a rate is the sum of each live worker's growth, and a worker that
exited between two snapshots simply stops contributing (no negative rate).
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["History", "Point", "Totals", "make_point", "quantile"]


def quantile(bounds: Sequence[float], counts: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile of a histogram (``counts`` has one more bucket than ``bounds``:
    the last is +Inf), interpolated linearly inside its bucket as Prometheus'
    ``histogram_quantile`` does.  None when the histogram is empty."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(counts):
        if count and seen + count >= rank:
            if i >= len(bounds):
                return bounds[-1]  # in +Inf: the highest finite bound is all we know
            low = bounds[i - 1] if i else 0.0
            return low + (bounds[i] - low) * max(0.0, rank - seen) / count
        seen += count
    return bounds[-1]


@dataclass(frozen=True, slots=True)
class Totals:
    """Cumulative counters at one moment (monotonic time ``mono``, wall time ``t``)."""

    t: float
    mono: float
    connections: int = 0
    messages: Mapping[tuple[int, int], int] = field(default_factory=dict)
    handshakes: int = 0
    latency_counts: Sequence[int] = ()
    rss_bytes: Mapping[int, int] = field(default_factory=dict)  # by slot
    restarts: int = 0


@dataclass(frozen=True, slots=True)
class Point:
    id: int
    t: float
    connections: int
    messages_per_s: float
    handshakes_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    rss_mb: Mapping[int, float]
    restarts: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "t": round(self.t, 3), "connections": self.connections,
            "messages_per_s": round(self.messages_per_s, 1),
            "handshakes_per_s": round(self.handshakes_per_s, 1),
            "p50_ms": None if self.p50_ms is None else round(self.p50_ms, 2),
            "p99_ms": None if self.p99_ms is None else round(self.p99_ms, 2),
            "rss_mb": {str(slot): round(mb, 1) for slot, mb in sorted(self.rss_mb.items())},
            "restarts": self.restarts,
        }


def _grown(before: Mapping[tuple[int, int], int], after: Mapping[tuple[int, int], int]) -> int:
    return sum(max(0, n - before.get(key, 0)) for key, n in after.items())


def make_point(point_id: int, before: Totals | None, after: Totals,
               bounds: Sequence[float]) -> Point:
    """Pure: the point for the interval from ``before`` to ``after``."""
    messages_rate = handshakes_rate = 0.0
    p50 = p99 = None
    if before is not None and after.mono > before.mono:
        dt = after.mono - before.mono
        messages_rate = _grown(before.messages, after.messages) / dt
        handshakes_rate = max(0, after.handshakes - before.handshakes) / dt
        if len(before.latency_counts) == len(after.latency_counts):
            delta = [max(0, a - b) for a, b in
                     zip(after.latency_counts, before.latency_counts, strict=True)]
            low, high = quantile(bounds, delta, 0.5), quantile(bounds, delta, 0.99)
            p50 = None if low is None else low * 1000
            p99 = None if high is None else high * 1000
    return Point(
        id=point_id, t=after.t, connections=after.connections,
        messages_per_s=messages_rate, handshakes_per_s=handshakes_rate,
        p50_ms=p50, p99_ms=p99,
        rss_mb={slot: rss / 1048576 for slot, rss in after.rss_bytes.items()},
        restarts=after.restarts,
    )


class History:
    """The last ``maxlen`` points (600: ten minutes at one a second)."""

    def __init__(self, bounds: Sequence[float], maxlen: int = 600) -> None:
        self.bounds = tuple(bounds)
        self.points: deque[Point] = deque(maxlen=maxlen)
        self._last: Totals | None = None
        self._ids = itertools.count(1)

    def add(self, totals: Totals) -> Point:
        point = make_point(next(self._ids), self._last, totals, self.bounds)
        self._last = totals
        self.points.append(point)
        return point

    def since(self, after_id: int = 0) -> list[Point]:
        return [p for p in self.points if p.id > after_id]
