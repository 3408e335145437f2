"""Token buckets keyed by client address.  Pure: the caller passes the time.

:class:`TokenBucket` is shared with the workers' per-socket event limit
(:mod:`worker.ratelimit`): ``burst`` tokens, refilled at ``rate`` per second.
Memory is bounded: past ``max_keys`` the buckets that are full again (idle long enough
to have refilled, so forgetting them changes nothing) are dropped, oldest
first, and if all are busy the oldest is dropped anyway.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["KeyedLimiter", "TokenBucket", "retry_after_header"]


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens per second, at most ``burst``; starts full."""

    rate: float
    burst: float
    tokens: float = field(default=-1.0)
    updated: float = 0.0

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ValueError(f"rate must be positive, got {self.rate}")
        if self.burst < 1:
            raise ValueError(f"burst must be at least 1, got {self.burst}")
        if self.tokens < 0:
            self.tokens = self.burst

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens if there are that many; say whether it did."""
        elapsed = now - self.updated
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        # A clock that goes backwards (it shouldn't: monotonic) refills nothing.
        self.updated = max(self.updated, now)
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False


class KeyedLimiter:
    def __init__(self, rate: float, burst: float, *, max_keys: int = 100_000) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[str, TokenBucket] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, key: str, now: float) -> tuple[bool, float]:
        """Take a token; return (allowed, seconds until one is available)."""
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = TokenBucket(self.rate, self.burst, updated=now)
            if len(self._buckets) >= self.max_keys:
                self._prune(now)
        self._buckets[key] = bucket  # re-inserted: the dict stays in last-use order
        if bucket.take(now):
            return True, 0.0
        return False, (1 - bucket.tokens) / self.rate

    def _prune(self, now: float) -> None:
        refill = self.burst / self.rate
        for key in [k for k, b in self._buckets.items() if now - b.updated >= refill]:
            del self._buckets[key]
        while len(self._buckets) >= self.max_keys:
            del self._buckets[next(iter(self._buckets))]


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
