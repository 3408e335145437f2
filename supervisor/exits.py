"""What follows a worker's exit, as a pure function: facts in, one outcome out.

Theory of operation
-------------------
A worker's pidfd becomes readable when it exits; the master reaps it, lets go
of everything that pointed at it (sockets, pools, leases, the emit relay) and
then asks :func:`after_exit` what the exit means.  The answer is an
:class:`ExitOutcome`: the handle's last state (``STOPPED`` when it drained as
asked, else ``DEAD``), the cause and the sentence the log and ``/status``
show, and what happens next (:data:`Then`):

- :class:`Retired`: we asked for it (reload, scale, shutdown) or the cluster
  is stopping; nothing follows and no restart is counted.
- :class:`StopCluster`: the app failed to boot before any worker was ever
  ready and ``on_boot_failure = "stop"``; the master halts with
  :data:`worker.control.BOOT_FAILED_EXIT`.
- :class:`SuccessorRuns`: a successor already runs in the slot (a recycle
  whose old process died); the slot needs nothing.
- :class:`FailSlot`: too many restarts within the flap window; the slot is
  parked as ``FAILED`` until a reload.
- :class:`RestartLater`: the slot waits ``delay_s`` (parked as ``BACKOFF``
  when it flaps, ``reason`` says so; else ``DEAD``), then the plan
  (:mod:`supervisor.plan`) spawns it again.

Every outcome but :class:`Retired` counts as a restart of its cause.  The
restart policy itself is :func:`supervisor.policy.decide_restart`; this
module only puts it in order with what the master knows of the exit, so
``tests/supervisor/test_exits.py`` drives it with plain values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .config import HealthConfig
from .policy import Action, ExitCause, classify_exit, decide_restart
from .state import WorkerState

__all__ = [
    "RETIRED",
    "ExitFacts",
    "ExitOutcome",
    "FailSlot",
    "RestartLater",
    "Retired",
    "StopCluster",
    "SuccessorRuns",
    "Then",
    "after_exit",
]

# Exits we asked for: the slot is not restarted for them.
RETIRED = frozenset({ExitCause.RELOAD, ExitCause.SCALE, ExitCause.SHUTDOWN})


@dataclass(frozen=True, slots=True)
class ExitFacts:
    returncode: int
    stop_cause: ExitCause | None  # why we asked it to stop, if we did
    boot_error: str | None  # what its BootFailed message said
    state: WorkerState  # its state when it exited
    successor_runs: bool = False  # another process is active in its slot


@dataclass(frozen=True, slots=True)
class Retired:
    pass


@dataclass(frozen=True, slots=True)
class StopCluster:
    pass


@dataclass(frozen=True, slots=True)
class SuccessorRuns:
    pass


@dataclass(frozen=True, slots=True)
class FailSlot:
    reason: str


@dataclass(frozen=True, slots=True)
class RestartLater:
    delay_s: float
    reason: str | None = None  # set: the slot flaps and waits as BACKOFF


Then = Retired | StopCluster | SuccessorRuns | FailSlot | RestartLater


@dataclass(frozen=True, slots=True)
class ExitOutcome:
    final: WorkerState  # STOPPED or DEAD
    cause: ExitCause
    text: str  # "exited with code 1", "stopped (reload), killed by SIGTERM", ...
    then: Then

    @property
    def counted(self) -> bool:
        """A restart of ``cause`` for /metrics and /status."""
        return not isinstance(self.then, Retired)


def after_exit(
    facts: ExitFacts,
    *,
    now: float,
    restart_times: Sequence[float],
    health: HealthConfig,
    ever_ready: bool,
    stopping: bool = False,
) -> ExitOutcome:
    """The outcome of one exit (``restart_times``: the slot's earlier restarts, monotonic)."""
    expected = facts.stop_cause in RETIRED
    drained = expected and facts.state is WorkerState.DRAINING
    final = WorkerState.STOPPED if drained else WorkerState.DEAD
    cause, text = classify_exit(facts.returncode, facts.stop_cause, facts.boot_error)
    then: Then
    if expected or stopping:
        then = Retired()
    else:
        decision = decide_restart(restart_times, now, cause, health, ever_ready=ever_ready)
        if decision.action is Action.HALT:
            then = StopCluster()
        elif facts.successor_runs:
            then = SuccessorRuns()
        elif decision.action is Action.FAIL:
            then = FailSlot(decision.reason)
        elif decision.action is Action.BACKOFF:
            then = RestartLater(decision.delay_s, decision.reason)
        else:
            then = RestartLater(decision.delay_s)
    return ExitOutcome(final, cause, text, then)
