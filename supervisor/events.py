"""The supervisor's recent events: a bounded ring the dashboard shows.

Theory of operation
-------------------
Two kinds of things happen to a cluster:

* what the master itself does or sees (a worker exits and is restarted with
  its cause, a roll, a scale change, a config reload, a recycle, a drain):
  the master records those where they happen, one :meth:`EventLog.add` call
  each;
* what workers only report in their heartbeats (guard refusals, an adapter
  that lost Redis and got it back) and what the balancer counts (429s,
  refused PROXY headers): :func:`observed_changes` compares two
  :class:`Observation` snapshots, a second apart, and says what changed.
  That function is pure; the dashboard's ticker takes the snapshots.

The ring keeps the last ``maxlen`` events; each has a sequence id so a
stream can send only what a client has not seen (:meth:`EventLog.since`).
Nothing here does I/O or reads a clock it was not given.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "BALANCER_REFUSALS",
    "Event",
    "EventLog",
    "Level",
    "Observation",
    "observed_changes",
]

Level = Literal["info", "warning", "error"]

# Balancer counters that are refusals, and the setting that refused.
BALANCER_REFUSALS: dict[str, str] = {
    "rate_limited": "new sessions refused by handshake_rate_per_ip (429)",
    "session_limited": "new sessions refused by max_sessions_per_ip (429)",
    "proxy_protocol_errors": "connections refused for a missing or bad PROXY header",
}
# Worker guard counters that are not refusals (successes, or sums of others).
_NOT_REFUSALS = frozenset({"auth_ok", "auth_failed", "rate_limited", "typed_ok"})


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    t: float  # wall clock, seconds since the epoch (display only)
    kind: str  # restart, exit, started, recycle, roll, reload, scale, drain, guard, adapter
    level: Level
    text: str
    slot: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "t": round(self.t, 3), "kind": self.kind, "level": self.level,
                "text": self.text, "slot": self.slot}


class EventLog:
    """The last ``maxlen`` events, oldest first."""

    def __init__(self, maxlen: int = 200, *, clock: Callable[[], float] = time.time) -> None:
        self._events: deque[Event] = deque(maxlen=maxlen)
        self._ids = itertools.count(1)
        self._clock = clock
        self.listeners: list[Callable[[Event], None]] = []

    def add(self, kind: str, text: str, *, level: Level = "info",
            slot: int | None = None) -> Event:
        event = Event(next(self._ids), self._clock(), kind, level, text, slot)
        self._events.append(event)
        for listener in self.listeners:
            listener(event)
        return event

    def since(self, after_id: int = 0) -> list[Event]:
        """Events with an id above ``after_id``, oldest first."""
        return [e for e in self._events if e.id > after_id]

    def __len__(self) -> int:
        return len(self._events)


@dataclass(frozen=True, slots=True)
class Observation:
    """What heartbeats and the balancer say at one moment.

    ``workers`` is keyed by ``(slot, generation)``: a replacement starts its
    counters at zero, and is compared with nothing (it has no "before").
    """

    guards: Mapping[tuple[int, int], Mapping[str, int]] = field(default_factory=dict)
    adapters: Mapping[tuple[int, int], str | None] = field(default_factory=dict)
    backend: str = ""
    balancer: Mapping[str, int] = field(default_factory=dict)


def observed_changes(before: Observation, after: Observation
                     ) -> list[tuple[str, Level, str, int | None]]:
    """Pure: ``(kind, level, text, slot)`` for each change worth an event.

    Guard refusals are summed per worker and counter over the interval (a
    flood is one event a tick, not one per refused client).
    """
    out: list[tuple[str, Level, str, int | None]] = []
    for key, counters in sorted(after.guards.items()):
        previous = before.guards.get(key)
        if previous is None:
            continue
        grown = {name: n - previous.get(name, 0) for name, n in counters.items()
                 if name not in _NOT_REFUSALS and n > previous.get(name, 0)}
        if grown:
            what = ", ".join(f"{n} {name}" for name, n in sorted(grown.items()))
            out.append(("guard", "warning", f"worker {key[0]} refused: {what}", key[0]))
    for name, meaning in BALANCER_REFUSALS.items():
        grew = after.balancer.get(name, 0) - before.balancer.get(name, 0)
        if grew > 0:
            out.append(("guard", "warning", f"balancer: {meaning}: {grew}", None))
    backend = after.backend or "adapter"
    for key, state in sorted(after.adapters.items()):
        if key not in before.adapters:
            continue
        was = before.adapters[key]
        if state == was or state is None or was is None:
            continue
        level: Level = "info" if state == "connected" else "warning"
        verb = "back" if state == "connected" else "lost"
        out.append(("adapter", level,
                    f"worker {key[0]} adapter ({backend}) {verb}: {was} -> {state}", key[0]))
    return out
