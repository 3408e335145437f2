"""A FIFO of outgoing frames, bounded by age and by bytes.

Theory of operation
-------------------

Every frame a broker-backed transport sends goes through this queue, so frames
leave in the order they were emitted whether or not the broker is reachable.
While the broker is up the queue drains as fast as it fills.  While it is down
(an *outage*) the queue holds what was emitted, within two bounds:

* ``max_bytes``: a frame that would push the total over the bound is refused
  and counted in ``overflowed``; what is already queued stays (it is older, and
  keeping a contiguous prefix keeps the order meaningful);
* ``max_age_s``: :meth:`expire` drops frames queued longer than that, counted
  in ``expired``.

``None`` or ``0`` turns a bound off.  The caller passes ``now`` (from
``time.monotonic()``), so this class holds no clock and no I/O.
"""

from __future__ import annotations

import collections
import dataclasses

__all__ = ["OutageBuffer", "Queued"]


@dataclasses.dataclass(frozen=True, slots=True)
class Queued:
    frame: bytes
    to: str | None  # destination node; None broadcasts
    queued_at: float


class OutageBuffer:
    def __init__(self, *, max_age_s: float | None, max_bytes: int | None) -> None:
        self.max_age_s = max_age_s or None
        self.max_bytes = max_bytes or None
        self._items: collections.deque[Queued] = collections.deque()
        self.bytes = 0
        # Counters
        self.overflowed = 0
        self.overflowed_bytes = 0
        self.expired = 0

    def __len__(self) -> int:
        return len(self._items)

    def push(self, frame: bytes, to: str | None, now: float) -> bool:
        """Queue ``frame``; False (and counted) when it does not fit."""
        if self.max_bytes is not None and self.bytes + len(frame) > self.max_bytes:
            self.overflowed += 1
            self.overflowed_bytes += len(frame)
            return False
        self._items.append(Queued(frame, to, now))
        self.bytes += len(frame)
        return True

    def expire(self, now: float) -> int:
        """Drop frames older than ``max_age_s``; return how many."""
        if self.max_age_s is None:
            return 0
        dropped = 0
        while self._items and now - self._items[0].queued_at > self.max_age_s:
            self.bytes -= len(self._items.popleft().frame)
            dropped += 1
        self.expired += dropped
        return dropped

    def peek(self, limit: int) -> list[Queued]:
        """The oldest ``limit`` frames, left in place until :meth:`commit`."""
        return [self._items[i] for i in range(min(limit, len(self._items)))]

    def commit(self, count: int) -> None:
        """Remove the ``count`` oldest frames: they were sent."""
        for _ in range(min(count, len(self._items))):
            self.bytes -= len(self._items.popleft().frame)
