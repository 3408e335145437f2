"""The token bucket and the per-socket limiter, with time driven by hand."""

from __future__ import annotations

import pytest

from balancer.ratelimit import TokenBucket
from worker.ratelimit import EventRateLimiter, Verdict


def test_bucket_starts_full_and_allows_a_burst() -> None:
    bucket = TokenBucket(rate=10, burst=20)
    assert [bucket.take(0.0) for _ in range(21)] == [True] * 20 + [False]


def test_bucket_refills_at_rate_and_caps_at_burst() -> None:
    bucket = TokenBucket(rate=10, burst=20)
    for _ in range(20):
        bucket.take(0.0)
    assert not bucket.take(0.05)  # half a token
    assert bucket.take(0.1)  # one token after 100 ms
    assert not bucket.take(0.1)
    # A long pause refills to the burst, no more.
    assert sum(bucket.take(100.0) for _ in range(50)) == 20


def test_bucket_sustains_exactly_the_rate() -> None:
    bucket = TokenBucket(rate=5, burst=10)
    allowed = sum(bucket.take(i * 0.01) for i in range(1001))  # 100/s, t = 0 .. 10 s
    assert allowed == 10 + 5 * 10  # the burst, then 5 a second for 10 s


def test_bucket_ignores_a_clock_going_backwards() -> None:
    bucket = TokenBucket(rate=1, burst=1)
    assert bucket.take(10.0)
    assert not bucket.take(5.0)
    assert not bucket.take(10.5)
    assert bucket.take(11.0)


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 2), (1, 0.5)])
def test_bucket_rejects_nonsense(rate: float, burst: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=rate, burst=burst)


def test_limiter_burst_is_twice_the_rate() -> None:
    limiter = EventRateLimiter(3)
    assert limiter.burst == 6
    verdicts = [limiter.check("a", 0.0) for _ in range(7)]
    assert verdicts[:6] == [Verdict.ALLOW] * 6
    assert verdicts[6] is Verdict.LIMITED_NOTIFY
    assert EventRateLimiter(0.2).burst == 1  # never less than one event


def test_limiter_keeps_one_bucket_per_key() -> None:
    limiter = EventRateLimiter(1)
    assert limiter.check("a", 0.0) is Verdict.ALLOW
    assert limiter.check("a", 0.0) is Verdict.ALLOW
    assert limiter.check("a", 0.0) is Verdict.LIMITED_NOTIFY
    assert limiter.check("b", 0.0) is Verdict.ALLOW
    assert len(limiter) == 2
    limiter.forget("a")
    limiter.forget("never-seen")
    assert len(limiter) == 1
    assert limiter.check("a", 0.0) is Verdict.ALLOW, "a forgotten socket starts full"


def test_limiter_notifies_at_most_once_per_interval() -> None:
    limiter = EventRateLimiter(1, burst=1, notice_interval_s=1.0)
    limiter.check("a", 0.0)
    seen = [limiter.check("a", t / 100) for t in range(1, 100)]  # 0.01 .. 0.99 s
    assert seen[0] is Verdict.LIMITED_NOTIFY
    assert set(seen[1:]) == {Verdict.LIMITED}
    assert limiter.check("a", 1.0) is Verdict.ALLOW  # refilled one token
    assert limiter.check("a", 1.005) is Verdict.LIMITED  # told at 0.01 s
    assert limiter.check("a", 1.01) is Verdict.LIMITED_NOTIFY  # a second since
    assert (limiter.allowed, limiter.limited) == (2, 101)


def test_limiter_under_a_flood_allows_burst_plus_rate_times_duration() -> None:
    limiter = EventRateLimiter(10)
    # 1000 events/s for 3 s.
    allowed = sum(limiter.check("a", i / 1000) is Verdict.ALLOW for i in range(3000))
    assert 20 + 10 * 3 - 1 <= allowed <= 20 + 10 * 3 + 1
