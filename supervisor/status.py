"""What ``/health`` and ``/status`` say, assembled from the master's state.

:func:`evaluate_health` is pure: worker handles, slot records, the desired
count, file-descriptor usage and the host book's reasons in; the status code
and body out (200 ``"ok"``, 200 ``"degraded"`` with reasons, 503
``"unavailable"`` when no worker is ready).  :func:`status_document` is the
``/status`` JSON (also the dashboard's stream); it reads the master and
holds no secret.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .fdlimit import FdUsage, fd_pressure
from .handle import SlotRecord, WorkerHandle
from .recovery import worker_totals
from .state import WorkerState

if TYPE_CHECKING:
    from .master import Master

__all__ = ["evaluate_health", "host_reasons", "recovery_status", "status_document"]


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
        "gate": h.gate,
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
                                    master.fd_usage(), host_reasons(master))
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
        "recovery": recovery_status(master),
        "hosts": [] if master.hosts is None else master.hosts.book.status(time.monotonic()),
    }


def recovery_status(master: Master) -> dict[str, Any]:
    backend = master.config.adapter.backend
    if master.recovery is not None:
        return {"enabled": True, "backend": backend,
                **master.recovery.status(h.recovery for h in master.handles),
                # backpressure: a log entry waited for a lagging worker; gave up on one
                "lag_waits": master.channels.lag_waits,
                "lag_timeouts": master.channels.lag_timeouts}
    if master.config.recovery.enabled:  # redis: the workers count, Redis holds
        return {"enabled": True, "backend": backend, "window_s":
                master.config.recovery.max_disconnection_s,
                **worker_totals(h.recovery for h in master.handles)}
    return {"enabled": False}


def host_reasons(master: Master) -> list[str]:
    return [] if master.hosts is None else master.hosts.book.reasons()
