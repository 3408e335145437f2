"""Worker slot states and the one table of allowed transitions.

::

    starting ──► ready ──► draining ──► stopped
        │          │           │
        └──────────┴───────────┴──► dead ──► backoff ──► starting
                                      │         │
                                      └─────────┴──► failed (gave up)

``starting`` is alive but not yet serving; only ``ready`` takes new sessions;
``draining`` still owns its sessions but takes no new ones.  ``failed`` is left
only by an operator (reload), which moves it back to ``starting``.
"""

from __future__ import annotations

import enum

__all__ = ["TRANSITIONS", "InvalidTransition", "WorkerState", "check_transition"]


class WorkerState(enum.StrEnum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"
    DEAD = "dead"
    BACKOFF = "backoff"
    FAILED = "failed"


S = WorkerState
TRANSITIONS: dict[WorkerState, frozenset[WorkerState]] = {
    S.STARTING: frozenset({S.READY, S.DRAINING, S.DEAD}),
    S.READY: frozenset({S.DRAINING, S.DEAD}),
    S.DRAINING: frozenset({S.STOPPED, S.DEAD}),
    S.DEAD: frozenset({S.BACKOFF, S.STARTING, S.FAILED, S.STOPPED}),
    S.BACKOFF: frozenset({S.STARTING, S.FAILED, S.STOPPED}),
    S.FAILED: frozenset({S.STARTING, S.STOPPED}),
    S.STOPPED: frozenset(),
}


class InvalidTransition(Exception):
    """A state change the table does not allow: a bug in the supervisor."""


def check_transition(current: WorkerState, new: WorkerState) -> WorkerState:
    if new not in TRANSITIONS[current]:
        raise InvalidTransition(f"worker state {current} cannot become {new}")
    return new
