"""The master's side of a worker's exit: reap the process, then apply what follows.

Theory of operation
-------------------
Every worker's pidfd is registered with the event loop at spawn; when it
becomes readable the worker has exited and :meth:`Reaper.on_exit` runs.  It
first lets go of everything that pointed at the process (its pidfd and Unix
socket, the balancer's pools and session ledger, leases, the emit relay, the
recovery desk, the sampler), then asks the pure
:func:`supervisor.exits.after_exit` what the exit means and applies it: the
handle's last state, the slot's ``last_exit``, the restart count, and
either nothing, a halt of the cluster, or the slot parked (``DEAD``,
``BACKOFF`` or ``FAILED``, through the transition table) until the plan
(:mod:`supervisor.plan`) spawns it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import TYPE_CHECKING

from worker import control

from .commands import Stop
from .exceptions import Halt
from .exits import (
    ExitFacts,
    FailSlot,
    RestartLater,
    Retired,
    StopCluster,
    SuccessorRuns,
    after_exit,
)
from .handle import WorkerHandle
from .state import WorkerState

if TYPE_CHECKING:
    from .master import Master

__all__ = ["Reaper"]

log = logging.getLogger("siocluster.master")


class Reaper:
    def __init__(self, master: Master) -> None:
        self.master = master

    def on_exit(self, h: WorkerHandle) -> None:
        """The pidfd of ``h`` is readable: reap it, then apply :func:`.exits.after_exit`."""
        m = self.master
        returncode = h.process.poll()
        if returncode is None:
            return
        self._let_go(h)
        record = m.slot_record(h.slot)
        now = time.monotonic()
        out = after_exit(
            ExitFacts(returncode, h.stop_cause, h.boot_error, h.state,
                      successor_runs=bool(m.active(h.slot))),
            now=now, restart_times=record.restart_times, health=m.config.health,
            ever_ready=m.ever_ready(), stopping=m.stopping,
        )
        h.state = out.final
        m.directory.invalidate()
        record.last_exit = text = out.text
        if out.counted:
            m.count_restart(out.cause)
        who = f"worker {h.slot} pid {h.pid}"
        match out.then:
            case Retired():
                log.info("%s %s", who, text)
                m.events.add("exit", f"{who} {text}", slot=h.slot)
            case StopCluster():
                detail = (h.boot_traceback or "").rstrip()
                m.halt = Halt(control.BOOT_FAILED_EXIT, f"{h.boot_error}\n{detail}".rstrip())
                m.events.add("restart", f"{who} {text}; stopping", level="error", slot=h.slot)
                m.commands.put_nowait(Stop())
            case SuccessorRuns():
                log.warning("%s %s", who, text)
                m.events.add("restart", f"{who} {text}; its successor runs",
                             level="warning", slot=h.slot)
            case FailSlot(reason):
                record.park(WorkerState.FAILED, reason=reason)
                log.error("%s %s; %s", who, text, reason)
                m.events.add("restart", f"{who} {text}; {reason}", level="error", slot=h.slot)
                if h.boot_traceback:
                    log.error("worker %d traceback:\n%s", h.slot, h.boot_traceback.rstrip())
            case RestartLater(delay_s, reason):
                backoff = reason is not None
                record.park(WorkerState.BACKOFF if backoff else WorkerState.DEAD,
                            restart_at=now + delay_s, reason=reason)
                why = f" ({reason})" if backoff else ""
                log.warning("%s %s; restarting in %.1fs%s", who, text, delay_s, why)
                m.events.add("restart", f"{who} {text}; restarting in {delay_s:.1f}s{why}",
                             level="warning", slot=h.slot)

    def _let_go(self, h: WorkerHandle) -> None:
        """An exited worker: close its pidfd and socket, and forget it everywhere."""
        m = self.master
        asyncio.get_running_loop().remove_reader(h.process.pidfd)
        m.balancer.returns.unwatch(h.process.handoff)
        h.process.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(h.socket_path)
        m.handles.remove(h)
        m.emit_relay.worker_gone(h)
        m.balancer.forget(h.slot, h.generation)
        m.lease_desk.holder_exited(h)
        if m.recovery is not None:
            m.recovery.worker_gone((h.slot, h.generation))
        m.sampler.forget(h.pid)
