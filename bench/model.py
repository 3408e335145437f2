"""What a workload hands back: its runs (one per target) and the table rows to print.

A :class:`Row` names the metric and which two runs it compares, so the report
can look the numbers up and compute the ratio; it holds no numbers itself.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Row", "Run", "Section", "merge_rounds"]

# Counts of failures add up over rounds; every other figure is a median.
SUMMED = frozenset({"errors", "lost", "failures"})


@dataclass
class Run:
    target: str  # e.g. "cluster/local", "standalone", "standalone/redis"
    metrics: dict[str, float | None] = field(default_factory=dict)
    window: dict[str, float] | None = None  # loadgen.Window.to_json()
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class Row:
    metric: str  # the label printed, e.g. "acks/s"
    key: str  # the key in Run.metrics
    cluster: str  # target label of the "cluster" column
    direct: str  # target label of the "direct" column
    direct_key: str | None = None  # key in the direct run's metrics, if not ``key``


@dataclass
class Section:
    workload: str
    runs: list[Run] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def run(self, target: str) -> Run | None:
        return next((r for r in self.runs if r.target == target), None)


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def merge_rounds(runs: list[Run]) -> Run:
    """One run per target out of several rounds: medians, failures summed."""
    if len(runs) == 1:
        return runs[0]
    keys = dict.fromkeys(k for run in runs for k in run.metrics)
    metrics: dict[str, float | None] = {}
    for key in keys:
        values = [run.metrics.get(key) for run in runs]
        if key in SUMMED:
            metrics[key] = sum(v for v in values if v is not None)
        else:
            metrics[key] = _median(values)
    windows = [run.window for run in runs if run.window is not None]
    window = None
    if windows:
        window = {k: _median([w.get(k) for w in windows]) or 0.0 for k in windows[0]}
    details = {**runs[-1].details,
               "rounds": [{"metrics": r.metrics, "window": r.window, "details": r.details}
                          for r in runs]}
    return Run(runs[0].target, metrics, window, details)
