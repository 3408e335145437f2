"""Per-socket event rate limiting: a token bucket, and one bucket per socket.

Theory of operation
-------------------
A :class:`~balancer.ratelimit.TokenBucket` holds up to ``burst`` tokens and refills at ``rate``
tokens per second.  Each event takes one token; an event that finds the
bucket empty is over the limit.  A socket that was quiet may therefore send
``burst`` events at once, and then ``rate`` per second for as long as it likes.
siocluster uses ``burst = 2 * rate`` (``[limits] event_rate_per_socket``).

:class:`EventRateLimiter` keeps one bucket per key (the worker uses the
Socket.IO ``(namespace, sid)``), created full on the socket's first event and
forgotten when the socket disconnects.  It also decides when a limited socket
should be *told* it is limited: at most once per ``notice_interval_s``, so a
flooding client does not make the server flood it back.

Nothing here does I/O or reads a clock: every call takes ``now`` (seconds from
:func:`time.monotonic`), so the tests drive time by hand.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from enum import Enum

from balancer.ratelimit import TokenBucket

__all__ = ["EventRateLimiter", "Verdict"]


class Verdict(Enum):
    """What to do with one event."""

    ALLOW = "allow"
    # Over the limit; the socket was told recently, so just act.
    LIMITED = "limited"
    # Over the limit, and time to tell the socket (the first time, or again).
    LIMITED_NOTIFY = "limited_notify"


@dataclass(slots=True)
class _Entry:
    bucket: TokenBucket
    last_notice: float | None = None


class EventRateLimiter:
    """One :class:`TokenBucket` per key; ``burst`` defaults to twice ``rate``."""

    def __init__(
        self, rate: float, *, burst: float | None = None, notice_interval_s: float = 1.0
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, 2.0 * rate)
        self.notice_interval_s = notice_interval_s
        self._entries: dict[Hashable, _Entry] = {}
        self.allowed = 0
        self.limited = 0

    def check(self, key: Hashable, now: float) -> Verdict:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry(TokenBucket(self.rate, self.burst, updated=now))
        if entry.bucket.take(now):
            self.allowed += 1
            return Verdict.ALLOW
        self.limited += 1
        if entry.last_notice is None or now - entry.last_notice >= self.notice_interval_s:
            entry.last_notice = now
            return Verdict.LIMITED_NOTIFY
        return Verdict.LIMITED

    def forget(self, key: Hashable) -> None:
        """The socket is gone: drop its bucket."""
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)
