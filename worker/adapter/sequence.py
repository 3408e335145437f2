"""Per-stream sequence numbers: no message delivered twice, every gap counted.

Theory of operation
-------------------

A sender numbers its frames per destination stream: one stream for its
broadcasts (``None``) and one per directed destination node.  Numbers start at
1; 0 marks an unsequenced frame (heartbeats, which may be dropped freely).

A receiver keeps the last number it accepted per ``(sender, stream)``.  A frame
at or below it is a duplicate (a broker retry after an ambiguous failure
re-sent it) and is dropped; a jump forward counts the skipped numbers as lost.
The first frame seen from a sender sets the baseline, because a worker that
joins late has not missed anything addressed to it.

Pure: no clock, no I/O.
"""

from __future__ import annotations

import enum

__all__ = ["Deduplicator", "Sequencer", "Verdict"]


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
    def __init__(self) -> None:
        self._last: dict[tuple[str, bool], int] = {}
        self.duplicates = 0
        self.lost = 0

    def check(self, sender: str, directed: bool, seq: int) -> Verdict:
        if seq == 0:
            return Verdict.ACCEPT
        key = (sender, directed)
        last = self._last.get(key)
        if last is not None:
            if seq <= last:
                self.duplicates += 1
                return Verdict.DUPLICATE
            self.lost += seq - last - 1
        self._last[key] = seq
        return Verdict.ACCEPT

    def forget(self, sender: str) -> None:
        self._last.pop((sender, False), None)
        self._last.pop((sender, True), None)
