"""The recycle policies, as a pure decision."""

from __future__ import annotations

import os

from supervisor.config import HealthConfig
from supervisor.handle import WorkerHandle
from supervisor.plan import WorkerFacts
from supervisor.policy import ExitCause
from supervisor.sampling import Sampler, due_recycle, recycle_cause
from supervisor.state import WorkerState

MB = 1024 * 1024


def test_rss_over_the_limit_recycles() -> None:
    health = HealthConfig(max_rss_mb=100)
    assert recycle_cause(101 * MB, 5.0, 1, health) is ExitCause.RSS
    assert recycle_cause(99 * MB, 5.0, 1, health) is None
    assert recycle_cause(10**12, 5.0, 1, HealthConfig()) is None  # 0: no limit


def test_lifetime_with_its_jitter() -> None:
    health = HealthConfig(max_lifetime_s=100.0, lifetime_jitter_s=10.0)
    assert recycle_cause(0, 100.5, 0, health) is ExitCause.LIFETIME  # jitter 0 for gen 0
    assert recycle_cause(0, 100.5, 500, health) is None  # gen 500: 5 s more
    assert recycle_cause(0, 105.5, 500, health) is ExitCause.LIFETIME
    assert recycle_cause(0, None, 0, health) is None  # never ready: not this policy's


def test_only_a_ready_worker_that_stays_is_recycled_and_a_recycle_counts_once() -> None:
    health = HealthConfig(max_rss_mb=100)
    ready = WorkerFacts(0, 7, WorkerState.READY)
    assert due_recycle(ready, 101 * MB, 5.0, recycling={}, health=health) is ExitCause.RSS
    assert due_recycle(ready, 99 * MB, 5.0, recycling={}, health=health) is None
    starting = WorkerFacts(0, 7, WorkerState.STARTING)
    assert due_recycle(starting, 101 * MB, None, recycling={}, health=health) is None
    stopping = WorkerFacts(0, 7, WorkerState.READY, stop_cause=ExitCause.SCALE)
    assert due_recycle(stopping, 101 * MB, 5.0, recycling={}, health=health) is None
    # The old process of a recycle in flight: its successor is already starting.
    assert due_recycle(ready, 101 * MB, 5.0, recycling={0: (0, 7)}, health=health) is None
    # The successor itself is judged on its own.
    successor = WorkerFacts(0, 8, WorkerState.READY)
    assert due_recycle(successor, 101 * MB, 5.0, recycling={0: (0, 7)},
                       health=health) is ExitCause.RSS


def test_the_sampler_reads_a_real_process() -> None:
    h = WorkerHandle(slot=0, generation=1, socket_path="",
                     process=type("P", (), {"pid": os.getpid()})())  # type: ignore[arg-type]
    sampler = Sampler()
    assert sampler.sample(h)
    assert h.sample["rss_bytes"] > 0 and h.sample["fds"] > 0
    [master, worker] = sampler.fd_usage([h])
    assert (master.who, worker.who) == ("master", "worker 0")
