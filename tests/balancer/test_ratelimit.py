from __future__ import annotations

import pytest

from balancer.ratelimit import KeyedLimiter, retry_after_header


def test_burst_then_rate() -> None:
    lim = KeyedLimiter(rate=2, burst=4)
    assert [lim.allow("a", 0.0)[0] for _ in range(5)] == [True] * 4 + [False]
    ok, wait = lim.allow("a", 0.0)
    assert not ok and wait == pytest.approx(0.5)
    assert lim.allow("a", 0.5)[0]
    assert not lim.allow("a", 0.5)[0]
    assert lim.allow("b", 0.5)[0], "keys are independent"


def test_refill_is_capped_at_burst() -> None:
    lim = KeyedLimiter(rate=1, burst=2)
    lim.allow("a", 0.0)
    assert [lim.allow("a", 100.0)[0] for _ in range(3)] == [True, True, False]


def test_memory_is_bounded() -> None:
    lim = KeyedLimiter(rate=1, burst=2, max_keys=100)
    for i in range(1000):
        lim.allow(f"ip{i}", float(i) / 1000)
    assert len(lim) <= 100
    for i in range(1000):
        lim.allow(f"late{i}", 10_000.0 + i)
    assert len(lim) <= 100


def test_retry_after() -> None:
    assert retry_after_header(0.01) == "1"
    assert retry_after_header(2.2) == "3"


def test_bad_settings() -> None:
    with pytest.raises(ValueError):
        KeyedLimiter(rate=0, burst=1)
