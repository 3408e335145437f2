"""The recovery store: disconnected sessions and the packet log (pure, no I/O).

Theory of operation
-------------------

Socket.IO connection-state recovery (socket.io >= 4.6) gives every session a
private id (``pid``) in its CONNECT reply and appends an *offset* to every
event it emits without an ack.  A client that lost its connection sends
``{pid, offset}`` in its next CONNECT; the server gives it back its sid, its
rooms and its data, and replays every packet after ``offset`` that was meant
for it.  socket.io-adapter keeps both in the Node process, so a crash loses
them; here they live in one :class:`RecoveryStore` held by the master, which
outlives any worker:

* **the log**: one total order of every recoverable emit of the host.  The
  master is the sequencer: a worker's emit goes to the master, which numbers
  it (``seq``), keeps it, and sends it to every worker, the emitting one
  included, which deliver it to their own sockets with the offset appended.
  A client's offset therefore names one position in one order, whichever
  worker delivered it.  Trimmed by age (``window_s``, the recovery window)
  and size (``max_bytes``).
* **the sessions**, by pid: sid, namespace, rooms, data (msgpack bytes, opaque
  here), the owning worker, and the log position when the store first heard
  of it (a client that never got a packet has no offset to send).  The owner
  keeps them current (write-through), so a SIGKILLed owner loses nothing that
  had reached the master.  A session whose owner died or that disconnected
  recoverably is kept for ``window_s``.

:meth:`RecoveryStore.restore` is the whole decision: a session is recovered
only if every packet after the client's offset is still in the log; missing
ones (``trimmed``) mean a fresh session, never a partial replay.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
from collections.abc import Iterable

__all__ = [
    "Entry",
    "Reason",
    "RecoveryStore",
    "RestoreResult",
    "Room",
    "Session",
    "matches",
]

Room = str | int
Owner = tuple[int, int]  # (slot, generation)

# Bookkeeping per log entry beyond its payload, counted against max_bytes.
ENTRY_OVERHEAD = 96


class Reason(enum.StrEnum):
    """Why a client that asked to recover was given a fresh session instead."""

    UNKNOWN = "unknown"  # no such pid (never seen, restored already, or the master restarted)
    EXPIRED = "expired"  # disconnected longer than the window
    TRIMMED = "trimmed"  # packets it missed were trimmed from the log (age or size)
    BAD_OFFSET = "bad_offset"  # an offset this log never issued
    NAMESPACE = "namespace"  # the pid belongs to another namespace
    REFUSED = "refused"  # the app's connect handler refused it (skip_middlewares = false)
    TIMEOUT = "timeout"  # the master did not answer in time


@dataclasses.dataclass(slots=True)
class Entry:
    seq: int
    at: float
    nsp: str
    rooms: tuple[Room, ...]  # empty: the whole namespace
    exclude: tuple[Room, ...]
    payload: bytes  # msgpack [event, args], opaque to the store

    @property
    def size(self) -> int:
        return len(self.payload) + ENTRY_OVERHEAD


@dataclasses.dataclass(slots=True)
class Session:
    pid: str
    sid: str
    nsp: str
    rooms: tuple[Room, ...]
    data: bytes
    owner: Owner | None
    since_seq: int  # the last seq logged when the store first heard of it
    disconnected_at: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class RestoreResult:
    session: Session | None
    missed: list[Entry]
    reason: Reason | None  # None: recovered


def matches(rooms: Iterable[Room], nsp: str, entry: Entry) -> bool:
    """Would a socket in ``rooms`` of ``nsp`` have been sent ``entry``? (the adapter's rule)"""
    if entry.nsp != nsp:
        return False
    held = set(rooms)
    included = not entry.rooms or any(r in held for r in entry.rooms)
    return included and not any(r in held for r in entry.exclude)


class RecoveryStore:
    def __init__(self, window_s: float, max_bytes: int, epoch: str) -> None:
        self.window_s = window_s
        self.max_bytes = max_bytes
        self.epoch = epoch  # offsets of another master's log are never taken for ours
        self.log: collections.deque[Entry] = collections.deque()
        self.log_bytes = 0
        self.last_seq = 0
        self.sessions: dict[str, Session] = {}
        # Counters
        self.recovered = 0
        self.not_recovered: collections.Counter[str] = collections.Counter()
        self.replayed = 0
        self.appended = 0
        self.trimmed_age = 0
        self.trimmed_size = 0
        self.expired_sessions = 0

    # Offsets

    def offset(self, seq: int) -> str:
        return f"{self.epoch}-{seq}"

    def parse_offset(self, offset: str) -> int | None:
        epoch, _, seq = offset.rpartition("-")
        if epoch != self.epoch or not seq.isdigit():
            return None
        return int(seq)

    @property
    def first_seq(self) -> int:
        """The oldest seq still held (last_seq + 1 when the log is empty)."""
        return self.log[0].seq if self.log else self.last_seq + 1

    # The log

    def append(
        self, nsp: str, rooms: tuple[Room, ...], exclude: tuple[Room, ...], payload: bytes,
        now: float,
    ) -> Entry:
        self.last_seq += 1
        entry = Entry(self.last_seq, now, nsp, rooms, exclude, payload)
        self.log.append(entry)
        self.log_bytes += entry.size
        self.appended += 1
        self._trim_size()
        return entry

    def _trim_size(self) -> None:
        while self.log_bytes > self.max_bytes and self.log:
            self.log_bytes -= self.log.popleft().size
            self.trimmed_size += 1

    def trim(self, now: float) -> None:
        """Drop log entries older than the window, and sessions disconnected longer."""
        horizon = now - self.window_s
        while self.log and self.log[0].at < horizon:
            self.log_bytes -= self.log.popleft().size
            self.trimmed_age += 1
        for pid in [p for p, s in self.sessions.items()
                    if s.disconnected_at is not None and s.disconnected_at < horizon]:
            del self.sessions[pid]
            self.expired_sessions += 1

    def oldest_age(self, now: float) -> float:
        return now - self.log[0].at if self.log else 0.0

    # Sessions, kept current by their owner

    def upsert(
        self, owner: Owner, pid: str, sid: str, nsp: str, rooms: tuple[Room, ...], data: bytes
    ) -> None:
        session = self.sessions.get(pid)
        if session is None:
            self.sessions[pid] = Session(pid, sid, nsp, rooms, data, owner, self.last_seq)
            return
        if session.owner != owner and session.disconnected_at is None:
            return  # a stale owner (its client recovered elsewhere): not its session any more
        session.owner, session.rooms, session.data = owner, rooms, data
        session.disconnected_at = None

    def closed(self, owner: Owner, pid: str, *, recoverable: bool, now: float) -> None:
        session = self.sessions.get(pid)
        if session is None or session.owner != owner:
            return
        if recoverable:
            session.disconnected_at = now
            session.owner = None
        else:
            del self.sessions[pid]

    def owner_gone(self, owner: Owner, now: float) -> int:
        """The owning worker exited: its live sessions become recoverable from now."""
        count = 0
        for session in self.sessions.values():
            if session.owner == owner:
                session.owner = None
                if session.disconnected_at is None:
                    session.disconnected_at = now
                count += 1
        return count

    # The decision

    def restore(
        self, pid: str, offset: str | None, nsp: str, owner: Owner, now: float
    ) -> RestoreResult:
        result = self._restore(pid, offset, nsp, owner, now)
        if result.reason is None:
            self.recovered += 1
            self.replayed += len(result.missed)
        else:
            self.not_recovered[result.reason] += 1
        return result

    def _restore(
        self, pid: str, offset: str | None, nsp: str, owner: Owner, now: float
    ) -> RestoreResult:
        session = self.sessions.get(pid)
        if session is None:
            return RestoreResult(None, [], Reason.UNKNOWN)
        if session.nsp != nsp:
            return RestoreResult(None, [], Reason.NAMESPACE)
        if session.disconnected_at is not None and session.disconnected_at + self.window_s < now:
            del self.sessions[pid]
            self.expired_sessions += 1
            return RestoreResult(None, [], Reason.EXPIRED)
        if offset is None:
            after = session.since_seq  # it never got a packet: everything since it connected
        else:
            parsed = self.parse_offset(offset)
            if parsed is None or parsed > self.last_seq:
                return RestoreResult(None, [], Reason.BAD_OFFSET)
            after = parsed
        if self.first_seq > after + 1:
            # Never partial: the session stays (it may still be asked with a newer
            # offset by the same client) but this attempt is a fresh connect.
            return RestoreResult(None, [], Reason.TRIMMED)
        start = after + 1 - self.first_seq
        missed = [
            e for e in _tail(self.log, start) if matches((*session.rooms, session.sid), nsp, e)
        ]
        # Ownership moves now: the old owner (if somehow alive) can no longer update it.
        session.owner, session.disconnected_at = owner, None
        return RestoreResult(session, missed, None)

    def status(self, now: float) -> dict[str, object]:
        disconnected = sum(1 for s in self.sessions.values() if s.disconnected_at is not None)
        return {
            "window_s": self.window_s,
            "sessions": len(self.sessions),
            "sessions_disconnected": disconnected,
            "log_entries": len(self.log),
            "log_bytes": self.log_bytes,
            "log_max_bytes": self.max_bytes,
            "log_oldest_age_s": round(self.oldest_age(now), 3),
            "appended": self.appended,
            "trimmed_age": self.trimmed_age,
            "trimmed_size": self.trimmed_size,
            "expired_sessions": self.expired_sessions,
            "recovered": self.recovered,
            "not_recovered": dict(self.not_recovered),
            "replayed": self.replayed,
        }


def _tail(log: collections.deque[Entry], start: int) -> Iterable[Entry]:
    for i in range(max(start, 0), len(log)):
        yield log[i]
