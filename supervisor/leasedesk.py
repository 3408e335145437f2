"""The master's desk for ``@singleton`` leases on the ``local`` backend.

Workers ask over the control channel (:class:`~worker.control.LeaseRequest`,
``LeaseRelease``); the desk decides with the pure granting table of
:mod:`worker.lease`, keeps :class:`~.singletons.SingletonBook` (what /status
and /metrics show) up to date, and returns the reply for the master to send.
Which worker may take a free lease during a roll is :func:`.singletons.
may_acquire`'s call, from each worker's ``(serving, leaving)`` standing the
master passes in.  No I/O here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from worker import control
from worker.lease import Holder, LeaseTable

from .handle import WorkerHandle
from .singletons import SingletonBook, may_acquire

__all__ = ["LeaseDesk", "Standing"]

log = logging.getLogger("siocluster.master")

Standing = tuple[bool, bool]  # (serving, leaving)


def _key(h: WorkerHandle) -> str:
    return f"{h.slot}.{h.generation:x}"


class LeaseDesk:
    def __init__(self, lease_s: float, host: str) -> None:
        self.host = host
        self.table = LeaseTable(lease_s)
        self.book = SingletonBook(host)

    def request(self, h: WorkerHandle, msg: control.LeaseRequest, standing: Standing,
                others: Sequence[Standing], *, now: float, wall: float) -> control.LeaseReply:
        holder = Holder(_key(h), self.host, h.slot, h.pid)
        eligible = msg.eligible and may_acquire(standing, list(others))
        decision = self.table.request(msg.name, holder, eligible=eligible, now=now, wall=wall)
        current = None
        if decision.current is not None:
            g = decision.current
            current = control.LeaseView(host=g.holder.host, slot=g.holder.slot,
                                        pid=g.holder.pid, token=g.token, since=g.since)
        if decision.new_tenure and current is not None:
            log.info("singleton %r granted to worker %d pid %d (token %d)",
                     msg.name, h.slot, h.pid, current.token)
            self.book.granted(msg.name, current)
        return control.LeaseReply(name=msg.name, seq=msg.seq, granted=decision.granted,
                                  current=current)

    def release(self, h: WorkerHandle, msg: control.LeaseRelease) -> None:
        if self.table.release(msg.name, _key(h), msg.token):
            log.info("singleton %r released by worker %d pid %d", msg.name, h.slot, h.pid)
            self.book.vacate(msg.name, msg.token)

    def holder_exited(self, h: WorkerHandle) -> None:
        for name in self.table.forget(_key(h)):
            log.warning("singleton %r: holder worker %d pid %d exited; lease free",
                        name, h.slot, h.pid)
        self.book.holder_exited(h.pid)
