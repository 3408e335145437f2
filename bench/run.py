"""``python -m bench``: every workload through the cluster and direct, one table.

Run from the repository root.  The exit status is 0 when every workload ran
(whatever the figures), 1 when one failed to run; the table and the JSON file
are written either way.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import NoReturn

from .lab import Lab
from .model import Run, Section
from .report import (
    machine_info,
    render_machine,
    render_peers_table,
    render_table,
    render_warnings,
    write_json,
)
from .settings import Settings, preset
from .workloads import WORKLOADS

__all__ = ["main"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark siocluster against the same app on standalone servers.")
    parser.add_argument("--workers", type=int, default=2,
                        help="cluster workers, and standalone servers (default 2)")
    parser.add_argument("--quick", action="store_true", help="smaller, shorter (~2 min)")
    parser.add_argument("--shards", type=int, default=max(2, os.cpu_count() or 2),
                        help="load generator processes (default: cores, at least 2)")
    parser.add_argument("--only", default="",
                        help=f"comma-separated workloads among: {', '.join(WORKLOADS)}")
    parser.add_argument("--cluster-adapter", choices=["local", "redis", "none"],
                        default="local",
                        help="the cluster's adapter outside fan-out (default local)")
    parser.add_argument("--cluster-websocket", choices=["tunnel", "handoff"], default=None,
                        help="the cluster's --websocket mode (default: the cluster's own)")
    parser.add_argument("--cluster-polling-handoff", choices=["on", "off"], default=None,
                        help="the cluster's [balancer] polling_handoff (default: its own, on); "
                             "off relays every polling request in the master, for an A/B run")
    parser.add_argument("--rounds", type=int, default=None,
                        help="interleaved rounds per target, median reported (full 2, quick 1; "
                             "with --peers at least 3)")
    parser.add_argument("--peers", action="store_true",
                        help="also run every workload against Node's socket.io cluster "
                             "(sticky + cluster-adapter) and HAProxy + N python-socketio "
                             "servers + AsyncRedisManager (needs node, npm, haproxy)")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds of each measured window")
    parser.add_argument("--fanout-clients", type=int, default=None)
    parser.add_argument("--idle-connections", type=int, default=None)
    parser.add_argument("--storm-sessions", type=int, default=None)
    parser.add_argument("--soak", action="store_true",
                        help="instead of the workloads: session churn, checking that fds and "
                             "RSS of the master and workers stay flat (bench/soak.py)")
    parser.add_argument("--soak-sessions", type=int, default=100_000)
    parser.add_argument("--soak-rounds", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR,
                        help="directory of the JSON results and server logs")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    return preset(quick=args.quick, workers=args.workers, shards=args.shards,
                  out_dir=args.out, cluster_adapter=args.cluster_adapter,
                  cluster_websocket=args.cluster_websocket, peers=args.peers,
                  cluster_polling_handoff=args.cluster_polling_handoff,
                  rounds=args.rounds,
                  duration_s=args.duration, fanout_clients=args.fanout_clients,
                  idle_connections=args.idle_connections, storm_sessions=args.storm_sessions)


def _on_sigterm(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt


def _run_all(lab: Lab, names: list[str]) -> tuple[list[Section], bool]:
    sections: list[Section] = []
    ok = True
    for name in names:
        started = time.monotonic()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        try:
            sections.append(WORKLOADS[name](lab))
        except Exception as exc:
            ok = False
            traceback.print_exc(file=sys.stderr)
            sections.append(Section(name, runs=[Run("-", error=f"{type(exc).__name__}: {exc}")]))
        print(f"[bench] {name} done in {time.monotonic() - started:.0f}s",
              file=sys.stderr, flush=True)
    return sections, ok


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.soak:
        from .soak import soak

        sys.exit(soak(args.soak_sessions, args.soak_rounds, out=args.out))
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(WORKLOADS)
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        _parser().error(f"unknown workloads {unknown}; choose among {list(WORKLOADS)}")
    settings = _settings(args)
    signal.signal(signal.SIGTERM, _on_sigterm)
    started_at = time.time()
    t0 = time.monotonic()
    lab = Lab(settings)
    info = machine_info()
    try:
        sections, ok = _run_all(lab, names)
    finally:
        lab.close()
    print(render_machine(info, settings))
    cores = int(info["cpus_logical"] or 1)
    print(render_peers_table(sections, cores) if settings.peers
          else render_table(sections, cores))
    warnings = render_warnings(sections, cores)
    if warnings:
        print(warnings)
    path = write_json(settings, info, sections, sys.argv, started_at)
    print(f"total {time.monotonic() - t0:.0f}s; results in {path}")
    sys.exit(0 if ok else 1)
