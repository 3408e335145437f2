"""The master's hands: the plan's actions done to worker processes.

Theory of operation
-------------------
:func:`supervisor.plan.plan` decides, :class:`WorkerActions` acts.
:meth:`WorkerActions.execute` takes one :data:`~supervisor.plan.PlanAction`
and does it: spawn a process in a slot (a new generation, its pidfd watched
by the :class:`~supervisor.reaping.Reaper`, its control channel opened by
:class:`~supervisor.channel.ControlChannels`), retire one gracefully (a
``Drain`` on its control channel, SIGTERM when it has none), recycle one (its
successor starts first; :attr:`WorkerActions.recycling` remembers the old
process until the plan retires it), stop one hard, or kill one that did not
stop in time.  Every slot state change goes through the transition table
(:class:`~supervisor.handle.SlotRecord`, :class:`~supervisor.handle.WorkerHandle`).
The operator's drain (``DrainWorker``) is a recycle too.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from typing import TYPE_CHECKING, Any

from worker import control

from .handle import WorkerHandle
from .plan import (
    DropSlot,
    FinishRecycle,
    Kill,
    PlanAction,
    PopReload,
    Recycle,
    Retire,
    Spawn,
    StopHard,
    drain_target,
)
from .policy import ExitCause
from .process import spawn_worker
from .state import WorkerState

if TYPE_CHECKING:
    from .master import Master

__all__ = ["WorkerActions"]

log = logging.getLogger("siocluster.master")


class WorkerActions:
    def __init__(self, master: Master) -> None:
        self.master = master
        self.generation = random.randrange(1 << 16)
        self.recycling: dict[int, WorkerHandle] = {}  # slot -> old handle awaiting its successor
        self.tasks: set[asyncio.Task[Any]] = set()

    def recycling_keys(self) -> dict[int, tuple[int, int]]:
        """Slot -> (slot, generation) of the old process of each recycle in flight."""
        return {s: (h.slot, h.generation) for s, h in self.recycling.items()}

    def _handle(self, key: tuple[int, int]) -> WorkerHandle:
        return next(h for h in self.master.handles if (h.slot, h.generation) == key)

    def execute(self, action: PlanAction, now: float) -> None:
        m = self.master
        match action:
            case Spawn(slot, restart):
                record = m.slot_record(slot)
                if restart:
                    record.restarts += 1
                    record.restart_times.append(now)
                record.unpark()
                self.spawn(slot)
            case Retire(key, cause):
                self.retire(self._handle(key), cause)
            case DropSlot(slot):
                del m.slots[slot]
            case PopReload(slot):
                m.reload_queue.remove(slot)
            case Recycle(key, cause):
                self.recycle(self._handle(key), cause)
            case FinishRecycle(slot):
                del self.recycling[slot]
            case Kill(key):
                h = self._handle(key)
                log.warning("worker %d pid %d did not stop in time; SIGKILL", h.slot, h.pid)
                h.process.kill()
                h.kill_at_mono = None
            case StopHard(key, cause, why):
                self.stop_hard(self._handle(key), cause, why)

    def spawn(self, slot: int) -> WorkerHandle:
        m = self.master
        self.generation += 1
        cpu = None
        if m.config.cluster.pin_cpus:
            cpu = slot % (os.cpu_count() or 1)
        process = spawn_worker(cwd=m.cwd, cpu=cpu)
        handle = WorkerHandle(
            slot=slot,
            generation=self.generation,
            socket_path=m.directory.socket_path(slot, self.generation),
            process=process,
        )
        m.handles.append(handle)
        m.directory.invalidate()
        loop = asyncio.get_running_loop()
        loop.add_reader(process.pidfd, m.reaper.on_exit, handle)
        m.balancer.returns.watch(process.handoff)  # polling connections it gives back
        self._spawn_task(m.channels.talk(handle))
        log.info("worker %d started: pid %d, generation %x", slot, handle.pid, handle.generation)
        m.events.add("started", f"worker {slot} started: pid {handle.pid}", slot=slot)
        return handle

    def _spawn_task(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def recycle(self, old: WorkerHandle, cause: ExitCause) -> None:
        """Start a successor in the slot; retire ``old`` once the successor is ready."""
        m = self.master
        if old.slot in self.recycling:
            return
        log.info("worker %d pid %d: recycling (%s)", old.slot, old.pid, cause)
        kind = {ExitCause.RELOAD: "roll", ExitCause.DRAIN: "drain"}.get(cause, "recycle")
        m.events.add(kind,
                     f"worker {old.slot} pid {old.pid}: replacing it ({cause})", slot=old.slot)
        self.recycling[old.slot] = old
        self.spawn(old.slot)

    def retire(self, h: WorkerHandle, cause: ExitCause) -> None:
        """Graceful: no new sessions, the worker closes its sessions and exits."""
        m = self.master
        if h.stop_cause is not None:
            return
        h.stop_cause = cause
        if h.state in (WorkerState.STARTING, WorkerState.READY):
            h.state = WorkerState.DRAINING
        m.directory.invalidate()
        timeout = m.config.cluster.graceful_timeout_s
        # A successor takes the sessions: spread the closes (a full stop has none).
        spread = 0.0 if cause is ExitCause.SHUTDOWN else m.config.health.drain_spread_s
        writer = h.writer
        if writer is not None and not writer.is_closing():
            writer.write(control.encode(control.Drain(timeout_s=timeout, spread_s=spread)))
        else:
            h.process.terminate()
        h.kill_at_mono = time.monotonic() + timeout + m.config.health.kill_grace_s

    def stop_hard(self, h: WorkerHandle, cause: ExitCause, why: str) -> None:
        m = self.master
        log.error("worker %d pid %d: %s; SIGTERM", h.slot, h.pid, why)
        m.events.add("restart", f"worker {h.slot} pid {h.pid}: {why}; SIGTERM",
                     level="error", slot=h.slot)
        h.stop_cause = cause
        h.process.terminate()
        h.kill_at_mono = time.monotonic() + m.config.health.kill_grace_s

    def drain(self, slot: int, pid: int | None) -> None:
        """An operator's drain: the successor starts first, then the worker drains."""
        m = self.master
        target = drain_target(slot, pid, [m.facts(h) for h in m.handles],
                              recycling=self.recycling_keys())
        if isinstance(target, str):
            who = f"worker {slot}" + ("" if pid is None else f" pid {pid}")
            log.info("drain of %s ignored: %s", who, target)
            m.events.add("drain", f"drain of {who} ignored: {target}", slot=slot)
            return
        self.recycle(self._handle(target), ExitCause.DRAIN)
