"""The master's reconcile step as a pure function: facts in, actions out.

Theory of operation
-------------------
Every tick the master compares the processes it has with the ones it wants
and decides what to do.  :func:`plan` makes that decision from frozen facts
(the slots, the workers, the rolling-reload queue, the recycles in flight,
the clock) and returns a list of :class:`PlanAction`; the master executes
them in order and feeds back what happens (exits, heartbeats, readiness) as
new facts on the next tick.  Nothing here spawns, signals or reads a clock,
so ``tests/supervisor/test_plan.py`` drives it with plain values.

The decisions, in the order they are made:

1. **Fill** every slot below ``desired`` that has no live process and is not
   parked as failed, once its backoff (``restart_at``) has passed: ``Spawn``
   (a restart when the slot had exited before).
2. **Trim** slots at or above ``desired``: ``Retire`` their processes
   (cause ``scale``), and ``DropSlot`` a slot once it has none left.
3. **Roll**: with no recycle in flight, take the next slot of the reload
   queue and ``Recycle`` its processes (a successor starts first).
4. **Finish recycles**: an old process is retired (``reload``) once a
   successor in its slot is ready; a recycle is forgotten when the old one
   stopped on its own or its successor died (the restart policy takes the
   slot over).
5. **Watch**: a process past its kill deadline gets ``Kill``; a starting one
   past ``boot_timeout_s``, or a ready one silent past
   ``heartbeat_timeout_s``, gets ``StopHard``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .policy import ExitCause
from .state import WorkerState

__all__ = [
    "DropSlot",
    "FinishRecycle",
    "Kill",
    "PlanAction",
    "PopReload",
    "Recycle",
    "Retire",
    "SlotFacts",
    "Spawn",
    "StopHard",
    "Timeouts",
    "WorkerFacts",
    "drain_target",
    "lease_standing",
    "plan",
    "reload_slots",
]

Key = tuple[int, int]  # (slot, generation)


@dataclass(frozen=True, slots=True)
class SlotFacts:
    slot: int
    parked: WorkerState | None = None  # BACKOFF or FAILED while it has no process
    restart_at: float | None = None  # monotonic; None: start at once


@dataclass(frozen=True, slots=True)
class WorkerFacts:
    slot: int
    generation: int
    state: WorkerState
    stop_cause: ExitCause | None = None
    started: float = 0.0  # monotonic
    last_heartbeat: float | None = None
    kill_at: float | None = None
    pid: int = 0

    @property
    def key(self) -> Key:
        return (self.slot, self.generation)

    @property
    def active(self) -> bool:
        """Alive and not asked to stop: it counts as the slot's process."""
        return self.stop_cause is None


@dataclass(frozen=True, slots=True)
class Timeouts:
    boot_timeout_s: float
    heartbeat_timeout_s: float


# Actions


@dataclass(frozen=True, slots=True)
class Spawn:
    slot: int
    restart: bool  # the slot had a process before: count a restart


@dataclass(frozen=True, slots=True)
class Retire:
    key: Key
    cause: ExitCause


@dataclass(frozen=True, slots=True)
class DropSlot:
    slot: int


@dataclass(frozen=True, slots=True)
class PopReload:
    slot: int


@dataclass(frozen=True, slots=True)
class Recycle:
    key: Key
    cause: ExitCause


@dataclass(frozen=True, slots=True)
class FinishRecycle:
    slot: int  # forget the recycle of this slot (a Retire follows when it completed)


@dataclass(frozen=True, slots=True)
class Kill:
    key: Key


@dataclass(frozen=True, slots=True)
class StopHard:
    key: Key
    cause: ExitCause
    why: str


PlanAction = Spawn | Retire | DropSlot | PopReload | Recycle | FinishRecycle | Kill | StopHard


def plan(
    now: float,
    desired: int,
    slots: Mapping[int, SlotFacts],
    workers: Sequence[WorkerFacts],
    *,
    reload_queue: Sequence[int] = (),
    recycling: Mapping[int, Key] | None = None,
    timeouts: Timeouts,
) -> list[PlanAction]:
    recycling = recycling or {}
    actions: list[PlanAction] = []
    actions += _fill(now, desired, slots, workers)
    actions += _trim(desired, slots, workers)
    actions += _roll(reload_queue, recycling, workers)
    actions += _finish_recycles(recycling, workers)
    actions += _watch(now, workers, timeouts)
    return actions


def _active(workers: Sequence[WorkerFacts], slot: int) -> list[WorkerFacts]:
    return [w for w in workers if w.slot == slot and w.active]


def _fill(now: float, desired: int, slots: Mapping[int, SlotFacts],
          workers: Sequence[WorkerFacts]) -> list[PlanAction]:
    actions: list[PlanAction] = []
    for slot in range(desired):
        facts = slots.get(slot, SlotFacts(slot))
        if _active(workers, slot) or facts.parked is WorkerState.FAILED:
            continue
        if facts.restart_at is None or now >= facts.restart_at:
            actions.append(Spawn(slot, restart=facts.restart_at is not None))
    return actions


def _trim(desired: int, slots: Mapping[int, SlotFacts],
          workers: Sequence[WorkerFacts]) -> list[PlanAction]:
    actions: list[PlanAction] = []
    for slot in sorted(s for s in slots if s >= desired):
        actions += [Retire(w.key, ExitCause.SCALE) for w in _active(workers, slot)]
        if not any(w.slot == slot for w in workers):
            actions.append(DropSlot(slot))
    return actions


def _roll(reload_queue: Sequence[int], recycling: Mapping[int, Key],
          workers: Sequence[WorkerFacts]) -> list[PlanAction]:
    if not reload_queue or recycling:
        return []
    slot = reload_queue[0]
    return [PopReload(slot), *(Recycle(w.key, ExitCause.RELOAD) for w in _active(workers, slot))]


def _finish_recycles(recycling: Mapping[int, Key],
                     workers: Sequence[WorkerFacts]) -> list[PlanAction]:
    actions: list[PlanAction] = []
    by_key = {w.key: w for w in workers}
    for slot, key in recycling.items():
        old = by_key.get(key)
        successors = [w for w in _active(workers, slot) if w.key != key]
        if old is None or old.stop_cause is not None:
            actions.append(FinishRecycle(slot))
        elif any(w.state is WorkerState.READY for w in successors):
            actions += [FinishRecycle(slot), Retire(key, ExitCause.RELOAD)]
        elif not successors:
            actions.append(FinishRecycle(slot))  # the successor died; policy has the slot
    return actions


def _watch(now: float, workers: Sequence[WorkerFacts], timeouts: Timeouts) -> list[PlanAction]:
    actions: list[PlanAction] = []
    for w in workers:
        if w.kill_at is not None and now >= w.kill_at:
            actions.append(Kill(w.key))
            continue
        if w.stop_cause is not None:
            continue
        if w.state is WorkerState.STARTING and now - w.started > timeouts.boot_timeout_s:
            actions.append(StopHard(w.key, ExitCause.BOOT_TIMEOUT,
                                   "not ready within boot_timeout_s"))
        elif w.state is WorkerState.READY and w.last_heartbeat is not None:
            age = now - w.last_heartbeat
            if age > timeouts.heartbeat_timeout_s:
                actions.append(StopHard(w.key, ExitCause.HEARTBEAT,
                                        f"no heartbeat for {age:.1f}s (event loop blocked?)"))
    return actions


# Decisions the master makes outside the tick


def reload_slots(desired: int, workers: Sequence[WorkerFacts]) -> list[int]:
    """The slots a rolling reload recycles, in order: every slot below ``desired``
    with a process that is not already stopping."""
    return sorted({w.slot for w in workers if w.active and w.slot < desired})


def lease_standing(worker: WorkerFacts, *, reload_queue: Sequence[int] = (),
                   recycling: Mapping[int, Key] | None = None) -> tuple[bool, bool]:
    """``(serving, leaving)`` of a worker asking for a lease (:mod:`supervisor.leasedesk`):
    serving while ready and not stopping; leaving while its slot waits in the
    reload queue or it is the old process of a recycle."""
    serving = worker.state is WorkerState.READY and worker.stop_cause is None
    leaving = worker.slot in reload_queue or (recycling or {}).get(worker.slot) == worker.key
    return serving, leaving


def drain_target(slot: int, pid: int | None, workers: Sequence[WorkerFacts], *,
                 recycling: Mapping[int, Key] | None = None) -> Key | str:
    """An operator's drain of ``slot`` (of its process ``pid`` when given): the
    process to recycle (the newest active one), or why the drain is ignored."""
    active = [w for w in _active(workers, slot) if pid is None or w.pid == pid]
    if not active:
        return "no such worker"
    if slot in (recycling or {}):
        return "already being replaced"
    return active[-1].key
