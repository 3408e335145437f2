"""The machine description, the one table, and the JSON file of a run.

Table columns, per metric row:

* ``cluster`` / ``direct``: the figure through siocluster and without it;
* ``c/d``: cluster divided by direct (for rates, 1.00 means the cluster costs
  nothing; for latencies and memory, lower is better);
* ``gen CPU%``, ``srv CPU%``: CPU of the load generator processes and of the
  server processes over the measured window, in % of one core, cluster|direct;
* ``other%``: CPU the machine spent on anything else over the window (other
  jobs on a shared machine), in % of one core.  A figure with a large
  ``other%`` was measured on a busy machine: rerun before trusting it.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from .limits import nofile_limit
from .model import Row, Run, Section
from .settings import Settings

__all__ = ["PEER_LABELS", "machine_info", "render_machine", "render_peers_table", "render_table",
           "render_warnings", "write_json"]

_LIBS = ("python-socketio", "python-engineio", "aiohttp", "uvloop")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for lib in _LIBS:
        try:
            versions[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            versions[lib] = None
    return {
        "cpu_model": _cpu_model(),
        "cpus_logical": os.cpu_count(),
        "cpus_physical": psutil.cpu_count(logical=False),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "libraries": versions,
        "nofile_limit": nofile_limit(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def render_machine(info: dict[str, Any], settings: Settings) -> str:
    libs = ", ".join(f"{k} {v}" for k, v in info["libraries"].items())
    mode = "quick" if settings.quick else "full"
    return "\n".join([
        f"machine: {info['cpu_model']}, {info['cpus_logical']} logical cores "
        f"({info['cpus_physical']} physical), {info['memory_gb']} GB; "
        f"load average at start {info['load_average_at_start']}",
        f"python: {info['implementation']} {info['python']} on {info['platform']}; {libs}",
        f"run: {mode} mode, {settings.workers} workers vs {settings.workers} standalone "
        f"servers, {settings.shards} generator processes, cluster adapter "
        f"{settings.cluster_adapter!r}, websocket mode "
        f"{settings.cluster_websocket or '(cluster default)'}, polling handoff "
        f"{settings.cluster_polling_handoff or '(cluster default)'}, {settings.rounds} round(s) "
        f"per target" + (", peers: HAProxy + python-socketio + AsyncRedisManager, "
                         "Node socket.io cluster" if settings.peers else ""),
    ])


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    magnitude = abs(value)
    if float(value).is_integer():
        return f"{int(value):,}"
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _metric(run: Run | None, key: str) -> float | None:
    return None if run is None else run.metrics.get(key)


def _cpu(run: Run | None, field: str) -> str:
    if run is None or run.window is None:
        return "-"
    return f"{run.window[field]:.0f}"


def _other_pct(run: Run | None, cores: int) -> float | None:
    if run is None or run.window is None:
        return None
    w = run.window
    busy = w["machine_cpu_pct"] * cores - w["generator_cpu_pct"] - w["server_cpu_pct"]
    return max(0.0, busy)


def _other(run: Run | None, cores: int) -> str:
    value = _other_pct(run, cores)
    return "-" if value is None else f"{value:.0f}"


def _roles_cpu(run: Run) -> str:
    """Where the servers' CPU went, when there is more than one role (master, workers)."""
    if run.window is None:
        return ""
    prefix = "server_cpu_pct_"
    roles = {k[len(prefix):]: v for k, v in run.window.items() if k.startswith(prefix)}
    if len(roles) < 2:
        return ""
    return "CPU% " + ", ".join(f"{role} {pct:.0f}" for role, pct in roles.items()) + "; "


def _balancer(stats: dict[str, Any]) -> str:
    """The counters that say how the cluster carried the sessions (totals over the run)."""
    names = (("requests", "requests"), ("handshakes", "handshakes"), ("upgrades", "upgrades"),
             ("handoffs", "handed off"), ("handoff_failures", "handoff failures"),
             ("session_unknown_400", "400 unknown sid"), ("upstream_errors_502", "502"),
             ("no_worker_503", "503"))
    return ", ".join(f"{stats[k]} {label}" for k, label in names if k in stats)


_HEADER = (f"{'workload':<14} {'metric':<26} {'cluster':>10} {'direct':>10} {'c/d':>6}  "
           f"{'gen CPU%':>9} {'srv CPU%':>9} {'other%':>9}")


def _row_line(section: Section, row: Row, first: bool, label: str, cores: int) -> str:
    c_run, d_run = section.run(row.cluster), section.run(row.direct)
    c = _metric(c_run, row.key)
    d = _metric(d_run, row.direct_key or row.key)
    ratio = f"{c / d:.2f}" if c is not None and d else "-"
    line = f"{label:<14} {row.metric:<26} {_fmt(c):>10} {_fmt(d):>10} {ratio:>6}"
    if first:
        gen = f"{_cpu(c_run, 'generator_cpu_pct')}|{_cpu(d_run, 'generator_cpu_pct')}"
        srv = f"{_cpu(c_run, 'server_cpu_pct')}|{_cpu(d_run, 'server_cpu_pct')}"
        other = f"{_other(c_run, cores)}|{_other(d_run, cores)}"
        line += f"  {gen:>9} {srv:>9} {other:>9}"
    return line


def render_table(sections: list[Section], cores: int) -> str:
    lines = [_HEADER, "-" * len(_HEADER)]
    for section in sections:
        pair: tuple[str, str] | None = None
        label = section.workload
        for row in section.rows:
            first = (row.cluster, row.direct) != pair
            pair = (row.cluster, row.direct)
            lines.append(_row_line(section, row, first, label, cores))
            label = ""
        for run in section.runs:
            if run.error:
                lines.append(f"{'':<14} ! {run.target}: {run.error}")
        for note in section.notes:
            lines.append(f"{'':<14} . {note}")
        for run in section.runs:
            stats = run.details.get("balancer")
            if stats:
                lines.append(f"{'':<14} . {run.target}: {_roles_cpu(run)}"
                             f"balancer {_balancer(stats)}")
    return "\n".join(lines)


# The peer systems' run labels (bench/peers.py), in column order.
PEER_LABELS = ("haproxy/redis", "node")

_PEERS_HEADER = (f"{'workload':<14} {'metric':<26} {'cluster':>9} {'direct':>9} {'haproxy':>9} "
                 f"{'node':>9} {'c/d':>5} {'c/h':>5} {'c/n':>5}  {'gen CPU% c|d|h|n':>17} "
                 f"{'srv CPU% c|d|h|n':>17}")


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b else "-"


def _range(run: Run | None, key: str) -> str:
    if run is None or key not in run.spread:
        return "-"
    lo, hi = run.spread[key]
    return f"{_fmt(lo)}-{_fmt(hi)}"


def cpu_us_per_op(run: Run | None, key: str, field: str) -> float | None:
    """CPU microseconds of ``field``'s processes per unit of rate ``key``, median of rounds.

    ``server_cpu_pct`` per ack says what a message costs the servers whether or
    not the machine was saturated (the generator shares the 2 cores), and
    ``generator_cpu_pct`` per ack that the generator costs the same for every
    system.
    """
    if run is None:
        return None
    rounds = run.details.get("rounds") or [{"metrics": run.metrics, "window": run.window}]
    values = []
    for r in rounds:
        rate, window = r["metrics"].get(key), r["window"]
        if rate and window is not None:
            values.append(window[field] * 1e4 / rate)
    return statistics.median(values) if values else None


def render_peers_table(sections: list[Section], cores: int) -> str:
    """``--peers``: each figure for the cluster, direct, HAProxy stack and Node, and ratios.

    Every figure is the median of the rounds; the line under it gives each
    system's min-max over the rounds.  Under each rate: the CPU microseconds
    the servers and the generator spent per unit (:func:`cpu_us_per_op`).
    """
    lines = [_PEERS_HEADER, "-" * len(_PEERS_HEADER)]
    for section in sections:
        pair: tuple[str, str] | None = None
        label = section.workload
        peer_runs = [section.run(name) for name in PEER_LABELS]
        for row in section.rows:
            runs = [section.run(row.cluster), section.run(row.direct), *peer_runs]
            keys = [row.key, row.direct_key or row.key, row.key, row.key]
            values = [_metric(run, key) for run, key in zip(runs, keys, strict=True)]
            c = values[0]
            line = (f"{label:<14} {row.metric:<26} "
                    + " ".join(f"{_fmt(v):>9}" for v in values)
                    + f" {_ratio(c, values[1]):>5} {_ratio(c, values[2]):>5}"
                      f" {_ratio(c, values[3]):>5}")
            if (row.cluster, row.direct) != pair:
                gen = "|".join(_cpu(run, "generator_cpu_pct") for run in runs)
                srv = "|".join(_cpu(run, "server_cpu_pct") for run in runs)
                line += f"  {gen:>17} {srv:>17}"
            pair = (row.cluster, row.direct)
            lines.append(line)
            ranges = [_range(run, key) for run, key in zip(runs, keys, strict=True)]
            lines.append(f"{'':<14} {'  min-max':<26} " + " ".join(f"{r:>9}" for r in ranges))
            if row.per_op:
                for name, field in (("srv", "server_cpu_pct"), ("gen", "generator_cpu_pct")):
                    costs = [cpu_us_per_op(run, key, field)
                             for run, key in zip(runs, keys, strict=True)]
                    lines.append(f"{'':<14} {f'  {name} CPU us per {row.per_op}':<26} "
                                 + " ".join(f"{_fmt(v):>9}" for v in costs)
                                 + f" {_ratio(costs[0], costs[1]):>5}"
                                   f" {_ratio(costs[0], costs[2]):>5}"
                                   f" {_ratio(costs[0], costs[3]):>5}")
            label = ""
        for run in section.runs:
            if run.error:
                lines.append(f"{'':<14} ! {run.target}: {run.error}")
        for note in section.notes:
            lines.append(f"{'':<14} . {note}")
        other = ", ".join(f"{run.target} {_other(run, cores)}" for run in section.runs
                          if run.window is not None)
        if other:
            lines.append(f"{'':<14} . other% (CPU of everything else, % of a core): {other}")
    return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def write_json(settings: Settings, info: dict[str, Any], sections: list[Section],
               argv: list[str], started_at: float) -> Path:
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started_at))
    path = settings.out_dir / f"bench-{stamp}{'-quick' if settings.quick else ''}.json"
    doc = {"started_at": started_at, "command": argv, "settings": _jsonable(settings),
           "machine": info, "sections": _jsonable(sections)}
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


BUSY_OTHER_PCT = 25.0
GENERATOR_HOT_PCT = 80.0


def render_warnings(sections: list[Section], cores: int) -> str:
    """Say so when the figures cannot be trusted: a shared machine, a saturated one."""
    runs = [run for section in sections for run in section.runs if run.window is not None]
    lines = []
    busy = [run for run in runs if (_other_pct(run, cores) or 0.0) > BUSY_OTHER_PCT]
    if busy:
        lines.append(
            f"! {len(busy)} of {len(runs)} measured windows had other processes using more than "
            f"{BUSY_OTHER_PCT:.0f}% of a core (column other%): the machine was shared, the "
            "figures are noisy; compare ratios, and rerun on an idle machine")
    hot = [run for run in runs if run.window is not None and run.window["shards"]
           and run.window["generator_cpu_pct"] / run.window["shards"] > GENERATOR_HOT_PCT]
    if hot:
        lines.append(
            f"! {len(hot)} of {len(runs)} windows had generator processes above "
            f"{GENERATOR_HOT_PCT:.0f}% of a core each: the generator may be the bottleneck; "
            "raise --shards")
    saturated = [run for run in runs if run.window is not None
                 and run.window["machine_cpu_pct"] > 95.0 and run.window["generator_cpu_pct"] > 0]
    if saturated:
        lines.append(
            f"! {len(saturated)} of {len(runs)} windows ran with every core busy: generator, "
            "servers and anything else share the cores, so absolute figures are a lower bound "
            "of what the servers do alone")
    return "\n".join(lines)
