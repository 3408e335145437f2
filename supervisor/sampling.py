"""psutil samples of every process, and the recycle policies that read them.

:class:`Sampler` is the I/O: one ``psutil.Process`` per worker pid (so CPU
percentages are measured between samples), the master's own figures, and
the open-files usage /health and /metrics show.  :func:`due_recycle` and
:func:`recycle_cause` are the pure decision: a ready worker (not already
stopping or being replaced) over ``max_rss_mb``, or past ``max_lifetime_s``
(plus its jitter), is recycled gracefully.
"""

from __future__ import annotations

import resource
from collections.abc import Iterable, Mapping
from typing import Any

import psutil

from .config import HealthConfig
from .fdlimit import FdUsage
from .handle import WorkerHandle
from .plan import WorkerFacts
from .policy import ExitCause
from .state import WorkerState

__all__ = ["Sampler", "due_recycle", "recycle_cause", "soft_limit"]


def soft_limit(value: int) -> int:
    """0 for an unlimited soft limit (nothing to warn against)."""
    return 0 if value == resource.RLIM_INFINITY or value < 0 else value


def recycle_cause(rss_bytes: int, ready_for_s: float | None, generation: int,
                  health: HealthConfig) -> ExitCause | None:
    """Pure: why a ready worker should be recycled now, or None."""
    if health.max_rss_mb and rss_bytes > health.max_rss_mb * 1024 * 1024:
        return ExitCause.RSS
    if health.max_lifetime_s and ready_for_s is not None:
        # Spread recycles of workers started together over lifetime_jitter_s.
        jitter = (generation % 1000) / 1000 * health.lifetime_jitter_s
        if ready_for_s > health.max_lifetime_s + jitter:
            return ExitCause.LIFETIME
    return None


def due_recycle(worker: WorkerFacts, rss_bytes: int, ready_for_s: float | None, *,
                recycling: Mapping[int, tuple[int, int]], health: HealthConfig,
                ) -> ExitCause | None:
    """Pure: why a freshly sampled worker should be recycled now, or None.  Only
    a ready worker that is not stopping is, and not the old process of a
    recycle in flight (its successor is already starting: count it once)."""
    if worker.state is not WorkerState.READY or worker.stop_cause is not None:
        return None
    if recycling.get(worker.slot) == worker.key:
        return None
    return recycle_cause(rss_bytes, ready_for_s, worker.generation, health)


class Sampler:
    def __init__(self) -> None:
        self._procs: dict[int, psutil.Process] = {}

    def sample(self, h: WorkerHandle) -> bool:
        """Refresh ``h.sample``; False when the process could not be read."""
        proc = self._procs.get(h.pid)
        try:
            if proc is None:
                proc = self._procs[h.pid] = psutil.Process(h.pid)
                proc.cpu_percent(None)
            with proc.oneshot():
                h.sample = {
                    "rss_bytes": proc.memory_info().rss,
                    "cpu_percent": proc.cpu_percent(None),
                    "fds": proc.num_fds(),
                    "fd_limit": soft_limit(proc.rlimit(psutil.RLIMIT_NOFILE)[0]),
                    "threads": proc.num_threads(),
                }
        except psutil.Error:
            return False
        return True

    def forget(self, pid: int) -> None:
        self._procs.pop(pid, None)

    @staticmethod
    def master() -> dict[str, Any]:
        proc = psutil.Process()
        with proc.oneshot():
            return {
                "pid": proc.pid,
                "rss_bytes": proc.memory_info().rss,
                "cpu_percent": proc.cpu_percent(None),
                "fds": proc.num_fds(),
                "fd_limit": soft_limit(resource.getrlimit(resource.RLIMIT_NOFILE)[0]),
                "threads": proc.num_threads(),
            }

    @staticmethod
    def fd_usage(handles: Iterable[WorkerHandle]) -> list[FdUsage]:
        """Open descriptors against their limit: the master's now, the workers' last sample."""
        usages = [FdUsage("master", psutil.Process().num_fds(),
                          soft_limit(resource.getrlimit(resource.RLIMIT_NOFILE)[0]))]
        for h in handles:
            if "fds" in h.sample:
                usages.append(FdUsage(f"worker {h.slot}", h.sample["fds"], h.sample["fd_limit"]))
        return usages
