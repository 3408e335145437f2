"""Latency histograms that merge across processes, and percentiles from them.

Percentiles cannot be averaged, and shipping every sample of a fan-out run
(millions) between processes is wasteful, so each generator process records
into a :class:`Histogram` of log-spaced buckets (1% wide, 1 us to 1000 s) and
the parent merges the bucket counts.  A reported percentile is the upper edge
of its bucket: at most 1% high.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["Histogram"]

_MIN_S = 1e-6
_GROWTH = 1.01
_LOG_GROWTH = math.log(_GROWTH)
_BUCKETS = int(math.log(1e3 / _MIN_S) / _LOG_GROWTH) + 2


@dataclass
class Histogram:
    counts: dict[int, int] = field(default_factory=dict)
    total: int = 0
    max_s: float = 0.0

    def record(self, seconds: float) -> None:
        if seconds <= _MIN_S:
            index = 0
        else:
            index = min(_BUCKETS - 1, int(math.log(seconds / _MIN_S) / _LOG_GROWTH) + 1)
        self.counts[index] = self.counts.get(index, 0) + 1
        self.total += 1
        self.max_s = max(self.max_s, seconds)

    def merge(self, other: Histogram) -> None:
        for index, count in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + count
        self.total += other.total
        self.max_s = max(self.max_s, other.max_s)

    @classmethod
    def merged(cls, parts: Iterable[Histogram]) -> Histogram:
        out = cls()
        for part in parts:
            out.merge(part)
        return out

    def percentile(self, q: float) -> float | None:
        """The ``q``-th percentile (0-100) in seconds; ``None`` with no samples."""
        if not self.total:
            return None
        rank = max(1, math.ceil(self.total * q / 100.0))
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                return min(self.max_s, _MIN_S * _GROWTH**index)
        return self.max_s

    def to_json(self) -> dict[str, float | int | None]:
        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1e3, 3)

        return {"count": self.total, "p50_ms": ms(self.percentile(50)),
                "p90_ms": ms(self.percentile(90)), "p99_ms": ms(self.percentile(99)),
                "max_ms": ms(self.max_s if self.total else None)}
