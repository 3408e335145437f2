"""Sizes and durations of a run: the full preset, the ``--quick`` one, and overrides.

The full preset is sized to finish in under ~10 minutes on a 2-core machine
(every workload runs against two or three freshly started targets), the quick
one in under ~2 minutes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["Settings", "preset"]


@dataclass(frozen=True)
class Settings:
    workers: int
    shards: int  # load generator processes
    quick: bool
    out_dir: Path
    cluster_adapter: str  # the cluster's adapter for every workload but fan-out
    cluster_websocket: str | None  # the cluster's --websocket (None: its default)
    # Durations
    rounds: int  # interleaved measurements of each target (median); idle-memory runs once
    duration_s: float  # measured window of the steady-state workloads
    settle_s: float  # idle memory: pause before sampling RSS
    # Sizes
    ws_clients: int
    polling_clients: int
    storm_sessions: int
    fanout_clients: int
    fanout_window: int  # broadcasts in flight (not yet received by every client)
    idle_connections: int
    # Limits
    connect_concurrency: int  # connection attempts in flight, per generator process
    payload_bytes: int = 64
    # The app: bench_app (aiohttp; standalone: aiohttp servers) or bench_asgi
    # (socketio.ASGIApp; standalone: uvicorn processes).
    app: str = "bench_app"
    # --peers: every workload also runs against Node's socket.io cluster and
    # HAProxy + python-socketio + AsyncRedisManager (bench/peers.py).
    peers: bool = False
    # The cluster's [balancer] polling_handoff: "on", "off", None (its default).
    cluster_polling_handoff: str | None = None


_FULL = dict(rounds=2, duration_s=8.0, settle_s=3.0, ws_clients=64, polling_clients=32,
             storm_sessions=1000, fanout_clients=1000, fanout_window=4,
             idle_connections=10_000, connect_concurrency=50)
_QUICK = dict(rounds=1, duration_s=3.0, settle_s=1.0, ws_clients=32, polling_clients=16,
              storm_sessions=200, fanout_clients=200, fanout_window=4,
              idle_connections=1_000, connect_concurrency=50)


PEERS_MIN_ROUNDS = 3


def preset(*, quick: bool, workers: int, shards: int, out_dir: Path,
           cluster_adapter: str = "local", cluster_websocket: str | None = None,
           peers: bool = False, cluster_polling_handoff: str | None = None,
           **overrides: float | int | None) -> Settings:
    base = dict(_QUICK if quick else _FULL)
    if peers:  # a median and a spread need rounds; --rounds still overrides
        base["rounds"] = max(int(base["rounds"]), PEERS_MIN_ROUNDS)
    base.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(workers=workers, shards=shards, quick=quick, out_dir=out_dir,
                    cluster_adapter=cluster_adapter, cluster_websocket=cluster_websocket,
                    peers=peers, cluster_polling_handoff=cluster_polling_handoff,
                    **base)  # type: ignore[arg-type]
