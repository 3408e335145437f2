"""Per-stream sequence numbers: no message delivered twice, every gap counted.

Theory of operation
-------------------

A sender numbers its frames per destination stream: one stream for its
broadcasts (``None``), one per directed destination node, and, with dynamic
room channels (:mod:`.interest`), one per room channel.  Numbers start at 1;
0 marks an unsequenced frame (heartbeats, which may be dropped freely).

A receiver keeps the last number it accepted per ``(sender, stream)``.  A frame
at or below it is a duplicate (a broker retry after an ambiguous failure
re-sent it) and is dropped; a jump forward counts the skipped numbers as lost.
The first frame seen from a sender sets the baseline, because a worker that
joins late has not missed anything addressed to it.  The same holds for a room
channel a receiver subscribes to late: when it unsubscribes, it forgets that
stream (:meth:`Deduplicator.forget_stream`), so a later subscription starts a
new baseline instead of counting what it was not listening to as lost.

Pure: no clock, no I/O.
"""

from __future__ import annotations

import enum

__all__ = ["BROADCAST", "DIRECT", "Deduplicator", "Sequencer", "Verdict"]


class Sequencer:
    def __init__(self) -> None:
        self._last: dict[str | None, int] = {}

    def next(self, stream: str | None) -> int:
        seq = self._last.get(stream, 0) + 1
        self._last[stream] = seq
        return seq


class Verdict(enum.Enum):
    ACCEPT = "accept"
    DUPLICATE = "duplicate"


class Deduplicator:
    """Receiving side; ``stream`` is ``BROADCAST``, ``DIRECT`` or a room channel's key."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], int] = {}
        self.duplicates = 0
        self.lost = 0

    def check(self, sender: str, stream: str, seq: int) -> Verdict:
        if seq == 0:
            return Verdict.ACCEPT
        key = (sender, stream)
        last = self._last.get(key)
        if last is not None:
            if seq <= last:
                self.duplicates += 1
                return Verdict.DUPLICATE
            self.lost += seq - last - 1
        self._last[key] = seq
        return Verdict.ACCEPT

    def forget(self, sender: str) -> None:
        for key in [k for k in self._last if k[0] == sender]:
            del self._last[key]

    def forget_stream(self, stream: str) -> None:
        for key in [k for k in self._last if k[1] == stream]:
            del self._last[key]


BROADCAST = "*"
DIRECT = "@"
