"""What a workload hands back: its runs (one per target) and the table rows to print.

A :class:`Row` names the metric and which two runs it compares, so the report
can look the numbers up and compute the ratio; it holds no numbers itself.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Row", "Run", "Section", "merge_rounds", "round_order", "spread"]

# Counts of failures add up over rounds; every other figure is a median.
SUMMED = frozenset({"errors", "lost", "failures"})


@dataclass
class Run:
    target: str  # e.g. "cluster/local", "standalone", "standalone/redis"
    metrics: dict[str, float | None] = field(default_factory=dict)
    window: dict[str, float] | None = None  # loadgen.Window.to_json()
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    # (min, max) of each metric over the rounds merged into this run
    spread: dict[str, tuple[float, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    metric: str  # the label printed, e.g. "acks/s"
    key: str  # the key in Run.metrics
    cluster: str  # target label of the "cluster" column
    direct: str  # target label of the "direct" column
    direct_key: str | None = None  # key in the direct run's metrics, if not ``key``
    per_op: str = ""  # a rate of this unit ("ack"): --peers prints the CPU per unit


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


def round_order(targets: int, round_index: int) -> list[int]:
    """The order targets are measured in, round ``round_index``: 0 1 2, then 2 1 0, ...

    Flipping every round puts each target first as often as last, so a
    background load that comes and goes weighs on all of them alike.
    """
    order = list(range(targets))
    return order[::-1] if round_index % 2 else order


def spread(runs: list[Run]) -> dict[str, tuple[float, float]]:
    """(min, max) of each metric over rounds; a metric no round has is left out."""
    out: dict[str, tuple[float, float]] = {}
    for key in dict.fromkeys(k for run in runs for k in run.metrics):
        values = [v for run in runs if (v := run.metrics.get(key)) is not None]
        if values:
            out[key] = (min(values), max(values))
    return out


def merge_rounds(runs: list[Run]) -> Run:
    """One run per target out of several rounds: medians, failures summed, min-max kept."""
    if len(runs) == 1:
        runs[0].spread = spread(runs)
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
    return Run(runs[0].target, metrics, window, details, spread=spread(runs))
