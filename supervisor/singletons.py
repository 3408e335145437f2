"""What the master knows of the cluster's ``@singleton`` leases, for /status and /metrics.

Two sources feed one book: the master's own grants (``local`` backend) and the
:class:`~worker.control.SingletonReport` in every worker's heartbeat (either
backend; with Redis, a worker's report names the holder it last saw, which may
be on another host).  Fencing tokens only grow, so the freshest tenure is the
one with the highest token, and each increase is a handover, even when this
master never saw the tenures in between (another host's, with Redis).  A Redis
server restarted empty counts from 1 again: a worker that reports *holding* a
lower token resets the book for that name.

Pure: no I/O; the caller passes what it learned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from worker.control import LeaseView, SingletonReport

__all__ = ["SingletonBook", "may_acquire"]


def may_acquire(candidate: tuple[bool, bool], others: list[tuple[bool, bool]]) -> bool:
    """Whether a worker may take a free lease (local backend).

    Each worker is ``(serving, leaving)``: ``serving`` is ready and not being
    stopped; ``leaving`` is about to be replaced by a rolling restart or a
    recycle.  Prefer a worker that stays, so a roll hands a singleton over
    once, not once per slot; one that is leaving may take it only when no
    worker that stays could, so the singleton is never left without a holder.
    """
    serving, leaving = candidate
    if not serving:
        return False
    return not leaving or not any(s and not g for s, g in others)


@dataclass
class SingletonBook:
    host: str = ""
    current: dict[str, LeaseView | None] = field(default_factory=dict)
    handovers: dict[str, int] = field(default_factory=dict)
    # How often the holder's function raised, as its last report said.
    errors: dict[str, int] = field(default_factory=dict)
    _top: dict[str, int] = field(default_factory=dict)

    def _see(self, name: str, view: LeaseView, *, held: bool = False) -> None:
        top = self._top.get(name)
        self.handovers.setdefault(name, 0)
        if top is None or (held and view.token < top):
            self._top[name], self.current[name] = view.token, view
        elif view.token > top:
            self.handovers[name] += view.token - top
            self._top[name], self.current[name] = view.token, view

    def granted(self, name: str, view: LeaseView) -> None:
        self._see(name, view, held=True)

    def observe(self, reports: dict[str, SingletonReport]) -> None:
        for name, report in reports.items():
            self.current.setdefault(name, None)
            self.handovers.setdefault(name, 0)
            if report.current is not None:
                self._see(name, report.current, held=report.held)
            if report.held:
                self.errors[name] = report.errors

    def vacate(self, name: str, token: int) -> None:
        """The holder released the lease ``token``."""
        view = self.current.get(name)
        if view is not None and view.token == token:
            self.current[name] = None

    def holder_exited(self, pid: int) -> None:
        """A worker of this host exited: it holds nothing any more."""
        for name, view in self.current.items():
            if view is not None and view.host == self.host and view.pid == pid:
                self.current[name] = None

    def status(self, now_wall: float) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for name in sorted(self.current):
            view = self.current[name]
            entry: dict[str, Any] = {"name": name, "holder": None, "token": None,
                                     "held_for_s": None, "handovers": self.handovers.get(name, 0),
                                     "errors": self.errors.get(name, 0)}
            if view is not None:
                entry.update(
                    holder={"host": view.host, "slot": view.slot, "pid": view.pid},
                    token=view.token,
                    held_for_s=round(max(0.0, now_wall - view.since), 1),
                )
            out.append(entry)
        return out
