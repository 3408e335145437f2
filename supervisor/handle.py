"""What the master knows of each worker process, and of each slot.

A :class:`WorkerHandle` is one process: one slot, one generation.  During a
rolling restart a slot briefly has two handles, the draining old generation
and the starting new one; routing tells them apart by generation.  A
:class:`SlotRecord` outlives its processes and keeps the slot's restart
history and its backoff/failed state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from worker.control import AdapterStatus, LatencyReport

from .policy import ExitCause
from .process import WorkerProcess
from .state import WorkerState, check_transition

__all__ = ["SlotRecord", "WorkerHandle"]

log = logging.getLogger("siocluster.supervisor")


@dataclass
class WorkerHandle:
    slot: int
    generation: int
    socket_path: str
    process: WorkerProcess
    _state: WorkerState = WorkerState.STARTING
    started_at: float = field(default_factory=time.time)  # wall clock, for display only
    started_mono: float = field(default_factory=time.monotonic)
    ready_mono: float | None = None
    last_heartbeat_mono: float | None = None
    connections: int = 0
    handshakes_reported: int = 0
    handshakes_assigned: int = 0
    loop_lag_s: float = 0.0
    messages_total: int = 0
    guards: dict[str, int] = field(default_factory=dict)
    gate: dict[str, int] = field(default_factory=dict)  # worker/gate.py's counters
    # ... and its latency histograms as last reported (cumulative), by kind
    gate_latency: dict[str, LatencyReport] = field(default_factory=dict)
    adapter: AdapterStatus | None = None  # from the last heartbeat
    emits: dict[str, int] = field(default_factory=dict)
    external_refused: dict[str, int] = field(default_factory=dict)
    recovery: dict[str, int] = field(default_factory=dict)
    engineio_path: str = "/socket.io/"
    ping_budget_s: float = 0.0
    # Stopping: why, and when SIGKILL follows
    stop_cause: ExitCause | None = None
    writer: asyncio.StreamWriter | None = None
    kill_at_mono: float | None = None
    boot_error: str | None = None
    boot_traceback: str | None = None
    # psutil samples
    sample: dict[str, Any] = field(default_factory=dict)

    @property
    def state(self) -> WorkerState:
        return self._state

    @state.setter
    def state(self, new: WorkerState) -> None:
        if new is self._state:
            return
        check_transition(self._state, new)
        log.debug("worker %d gen %x: %s -> %s", self.slot, self.generation, self._state, new)
        self._state = new

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def load(self) -> int:
        """Sessions it has, plus handshakes routed to it that it has not reported yet."""
        return self.connections + max(0, self.handshakes_assigned - self.handshakes_reported)

    def heartbeat_age(self, now: float) -> float | None:
        if self.last_heartbeat_mono is None:
            return None
        return now - self.last_heartbeat_mono


@dataclass
class SlotRecord:
    slot: int
    # DEAD, BACKOFF or FAILED while the slot has no process; None otherwise.
    # Changed only by park() and unpark(), through the transition table.
    parked: WorkerState | None = None
    restart_at_mono: float | None = None
    restarts: int = 0
    restart_times: list[float] = field(default_factory=list)
    last_exit: str | None = None
    failure_reason: str | None = None
    ever_ready: bool = False

    def park(self, state: WorkerState, *, restart_at: float | None = None,
             reason: str | None = None) -> None:
        """The slot's process exited: it waits as DEAD (restart soon), BACKOFF or FAILED."""
        current = self.parked or WorkerState.DEAD
        if state is not current:
            check_transition(current, state)
        log.debug("slot %d: %s -> %s", self.slot, current, state)
        self.parked, self.restart_at_mono, self.failure_reason = state, restart_at, reason

    def unpark(self) -> None:
        """A process starts in the slot (a restart, or an operator's reload of a failed one)."""
        if self.parked is not None:
            check_transition(self.parked, WorkerState.STARTING)
            log.debug("slot %d: %s -> starting", self.slot, self.parked)
        self.parked, self.restart_at_mono = None, None
