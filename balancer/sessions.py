"""Live Engine.IO sessions per client address, across the cluster.  Pure.

``[limits] max_sessions_per_ip`` needs to know, when a handshake arrives, how
many sessions that address already holds on every worker.  The workers are
the authority: each one counts its own sessions by client address and
reports what changed in its next heartbeat.  The master alone sees the
handshakes it forwards, so between a forward and the report that includes the
new session, the session is *pending* here.

A report received at ``t`` settles every handshake forwarded to that worker
before ``t - grace_s`` (a worker answers a handshake in far less than a
second).  Handshakes forwarded after that may or may not be in the report, so
they are counted on top: the count errs high, briefly, never low.  A worker
that is gone takes its sessions with it (:meth:`SessionLedger.forget`).

Keys are whatever identifies one worker process; the master uses
``(slot, generation)``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Mapping

__all__ = ["SessionLedger"]

# Pending handshakes older than this are dropped even without a report (a
# worker that stopped reporting is about to be replaced anyway).
_PENDING_MAX_AGE_S = 10.0


class SessionLedger:
    def __init__(self, *, grace_s: float = 1.0) -> None:
        self.grace_s = grace_s
        self._live: dict[Hashable, dict[str, int]] = {}
        self._pending: dict[Hashable, deque[tuple[float, str]]] = {}
        self._totals: dict[str, int] = {}  # reported, summed over workers
        self._unsettled: dict[str, int] = {}  # pending, summed over workers

    def count(self, address: str, now: float) -> int:
        """Sessions this address holds, counting handshakes not yet reported."""
        for queue in self._pending.values():
            self._expire(queue, now - _PENDING_MAX_AGE_S)
        return self._totals.get(address, 0) + self._unsettled.get(address, 0)

    def forwarded(self, worker: Hashable, address: str, now: float) -> None:
        self._pending.setdefault(worker, deque()).append((now, address))
        self._unsettled[address] = self._unsettled.get(address, 0) + 1

    def reported(self, worker: Hashable, changes: Mapping[str, int], now: float) -> None:
        """A worker's session counts for the addresses that changed (0: none left)."""
        live = self._live.setdefault(worker, {})
        for address, n in changes.items():
            self._add_total(address, n - live.get(address, 0))
            if n > 0:
                live[address] = n
            else:
                live.pop(address, None)
        queue = self._pending.get(worker)
        if queue is not None:
            self._expire(queue, now - self.grace_s)

    def forget(self, worker: Hashable) -> None:
        for address, n in self._live.pop(worker, {}).items():
            self._add_total(address, -n)
        queue = self._pending.pop(worker, None)
        if queue is not None:
            self._expire(queue, float("inf"))

    def addresses(self) -> int:
        """How many addresses hold at least one reported session."""
        return len(self._totals)

    def _add_total(self, address: str, delta: int) -> None:
        n = self._totals.get(address, 0) + delta
        if n > 0:
            self._totals[address] = n
        else:
            self._totals.pop(address, None)

    def _expire(self, queue: deque[tuple[float, str]], before: float) -> None:
        while queue and queue[0][0] < before:
            _, address = queue.popleft()
            n = self._unsettled[address] - 1
            if n:
                self._unsettled[address] = n
            else:
                del self._unsettled[address]
