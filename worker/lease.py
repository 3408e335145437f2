"""Singleton leases: who may run a cluster singleton, decided without I/O.

Theory of operation
-------------------
A singleton named N runs on the one worker that holds N's lease.  There are
two sides, and both are plain objects driven by the caller's clock:

* The **granting side** (:class:`LeaseTable`; the master holds one for the
  ``local`` backend, and the Redis backend applies the same rules in one Lua
  script).  A request from worker W for N is granted when N is free or already
  W's (a renewal).  A lease lapses ``lease_s`` after the last request the
  granting side granted; a holder that releases it, or whose process exited,
  frees it at once.  Every new tenure draws a larger **fencing token**.
  (RabbitMQ, for the ``amqp`` backend, grants with an exclusive queue and
  lets it lapse through its connection heartbeat: :func:`amqp_heartbeat_s`.)

* The **holder side** (:class:`HolderLease`).  Each request carries a sequence
  number and the holder remembers when it *sent* it.  A granted reply makes
  the lease valid until ``sent_at + lease_s - margin_s``.  The granting side
  received the request after it was sent, so its own expiry comes at least
  ``margin_s`` later: by the time it may give the lease to someone else, the
  former holder's own clock already says the lease is gone.  A reply that sat
  in a socket while the holder was paused (SIGSTOP, a blocked loop) extends
  nothing, because validity counts from the send time.

That is the fence.  A paused holder that resumes finds ``valid(now)`` false
before it does anything else: the runner (:mod:`worker.singleton`) checks it on
every emit and a timer cancels the task at ``valid_until``.  No clock is
shared: each side only compares its own ``time.monotonic()`` readings, and
``margin_s`` absorbs the difference in clock rates between hosts and the
scheduling delay between the fence check and the write.

Renewals go out every ``poll_interval(lease_s, heartbeat_s)`` (a third of the
lease at most), so one lost renewal never costs the lease; candidates poll at
the same pace, which bounds the gap after a holder dies or releases.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

__all__ = [
    "Decision",
    "Event",
    "Grant",
    "Holder",
    "HolderLease",
    "LeaseTable",
    "amqp_heartbeat_s",
    "margin_for",
    "poll_interval",
]


def margin_for(lease_s: float) -> float:
    """How much earlier than the granting side a holder gives its lease up."""
    return lease_s / 5


def poll_interval(lease_s: float, heartbeat_s: float) -> float:
    """How often holders renew and candidates ask: a heartbeat, at most a third of the lease."""
    return max(0.01, min(heartbeat_s, lease_s / 3))


def amqp_heartbeat_s(lease_s: float) -> int:
    """The AMQP heartbeat timeout (whole seconds) of a lease connection to RabbitMQ.

    With the ``amqp`` backend the granting side is RabbitMQ: a lease is an
    exclusive queue, which the broker frees only when the holder's connection
    closes (:mod:`worker.singleton_amqp`).  A holder that is paused sends
    nothing; RabbitMQ's heartbeat receiver checks every heartbeat timeout T and
    closes the connection once two checks in a row saw no byte arrive, that is
    2T to 3T after the last byte it received, and the holder's last confirmed
    renewal was sent before that byte arrived.  With ``2T >= lease_s`` the
    broker frees the lock no sooner than the other backends would (``lease_s``
    after the renewal), so the holder, whose validity ends ``lease_s -
    margin_s`` after it sent the renewal, keeps the whole margin.  T is the
    smallest whole second that makes it so: a stopped holder is replaced
    2T to 3T after it stopped.
    """
    return max(1, math.ceil(lease_s / 2))


@dataclass(frozen=True, slots=True)
class Holder:
    """One worker process, as a lease names it."""

    key: str  # unique for the process: "<slot>.<generation>" locally, the node id in Redis
    host: str
    slot: int
    pid: int


@dataclass(frozen=True, slots=True)
class Grant:
    """One tenure: who holds the lease, under which token, since when (wall clock, display)."""

    holder: Holder
    token: int
    since: float


@dataclass(frozen=True, slots=True)
class Decision:
    granted: bool
    # The tenure in force after the decision (None: nobody holds the lease).
    current: Grant | None
    # True when this decision started a new tenure.
    new_tenure: bool = False


@dataclass(slots=True)
class _Entry:
    grant: Grant
    renewed: float  # the granting side's monotonic clock


class LeaseTable:
    """The granting side for one host (the ``local`` backend)."""

    def __init__(self, lease_s: float) -> None:
        if lease_s <= 0:
            raise ValueError("lease_s must be positive")
        self.lease_s = lease_s
        self._entries: dict[str, _Entry] = {}
        self._tokens: dict[str, int] = {}
        # New tenures after the first one, per name.
        self.handovers: dict[str, int] = {}

    def _live(self, name: str, now: float) -> _Entry | None:
        entry = self._entries.get(name)
        if entry is not None and now - entry.renewed >= self.lease_s:
            del self._entries[name]
            return None
        return entry

    def request(
        self, name: str, holder: Holder, *, eligible: bool, now: float, wall: float
    ) -> Decision:
        """Acquire or renew.  ``eligible`` false (a draining worker) may renew, never acquire."""
        entry = self._live(name, now)
        if entry is not None:
            if entry.grant.holder.key == holder.key:
                entry.renewed = now
                return Decision(True, entry.grant)
            return Decision(False, entry.grant)
        if not eligible:
            return Decision(False, None)
        token = self._tokens.get(name, 0) + 1
        if name in self._tokens:
            self.handovers[name] = self.handovers.get(name, 0) + 1
        self._tokens[name] = token
        grant = Grant(holder, token, wall)
        self._entries[name] = _Entry(grant, now)
        return Decision(True, grant, new_tenure=True)

    def release(self, name: str, key: str, token: int) -> bool:
        """The holder gives the lease back (its task has finished); False if not its lease."""
        entry = self._entries.get(name)
        if entry is None or entry.grant.holder.key != key or entry.grant.token != token:
            return False
        del self._entries[name]
        return True

    def forget(self, key: str) -> list[str]:
        """The process ``key`` exited: a dead process cannot run anything, free its leases now."""
        names = [n for n, e in self._entries.items() if e.grant.holder.key == key]
        for name in names:
            del self._entries[name]
        return names

    def current(self, name: str, now: float) -> Grant | None:
        entry = self._live(name, now)
        return None if entry is None else entry.grant


class Event(enum.Enum):
    NONE = "none"  # nothing changed
    STARTED = "started"  # a new tenure: start the function (cancel any stale run first)
    RENEWED = "renewed"
    LOST = "lost"  # cancel the function now


@dataclass(slots=True)
class HolderLease:
    """The holder side of one singleton's lease, in one worker."""

    lease_s: float
    margin_s: float
    token: int | None = None
    valid_until: float = 0.0
    current: Grant | None = None  # the tenure as last seen (ours or someone else's)
    _seq: int = 0
    _sent: dict[int, float] = field(default_factory=dict)

    @property
    def holding(self) -> bool:
        return self.token is not None

    def valid(self, now: float) -> bool:
        return self.token is not None and now < self.valid_until

    def begin(self, now: float) -> int:
        """A request goes out now; returns its sequence number."""
        self._seq += 1
        self._sent[self._seq] = now
        for seq in [s for s, t in self._sent.items() if now - t > self.lease_s]:
            del self._sent[seq]
        return self._seq

    def on_reply(self, seq: int, granted: bool, current: Grant | None, now: float) -> Event:
        """The granting side answered request ``seq``."""
        sent_at = self._sent.pop(seq, None)
        for older in [s for s in self._sent if s < seq]:
            del self._sent[older]  # replies come in order: those are lost
        if sent_at is None:
            return Event.NONE
        self.current = current
        if not granted or current is None:
            return self.drop()
        until = sent_at + self.lease_s - self.margin_s
        if until <= now:
            # Granted, but the answer came too late to be worth anything.
            return self.drop()
        if self.token == current.token:
            self.valid_until = max(self.valid_until, until)
            return Event.RENEWED
        self.token, self.valid_until = current.token, until
        return Event.STARTED

    def expire(self, now: float) -> Event:
        """Called by the watchdog timer: the lease ran out without a renewal."""
        if self.token is not None and now >= self.valid_until:
            return self.drop()
        return Event.NONE

    def drop(self) -> Event:
        if self.token is None:
            return Event.NONE
        self.token, self.valid_until = None, 0.0
        return Event.LOST
