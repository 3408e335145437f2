"""The balancer's latency histogram, and what it takes in from the workers' gates."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from balancer.stats import LATENCY_BUCKETS_S, Latency

N = len(LATENCY_BUCKETS_S) + 1


def test_observe_counts_into_the_first_bucket_not_below() -> None:
    hist = Latency()
    hist.observe(0.001)  # on a bound: that bucket (Prometheus' le)
    hist.observe(0.0011)
    hist.observe(120.0)  # over the last bound: +Inf
    assert hist.counts[0] == 1 and hist.counts[1] == 1 and hist.counts[-1] == 1
    assert abs(hist.total_s - 120.0021) < 1e-9


def test_absorb_adds_what_a_cumulative_report_gained() -> None:
    hist = Latency()
    hist.observe(0.002)
    first = [0] * N
    first[0] = 3
    assert hist.absorb((), 0.0, first, 0.003)
    second = list(first)
    second[0], second[4] = 5, 1
    assert hist.absorb(first, 0.003, second, 0.025)
    assert hist.counts[0] == 5 and hist.counts[1] == 1 and hist.counts[4] == 1
    assert abs(hist.total_s - 0.027) < 1e-9


def test_absorb_refuses_a_report_that_does_not_fit() -> None:
    hist = Latency()
    grown = [1] * N
    assert not hist.absorb((), 0.0, [1] * (N - 1), 1.0)  # another bucket layout
    assert not hist.absorb(grown, 1.0, [0] * N, 1.0)  # a count went back
    assert not hist.absorb(grown, 2.0, grown, 1.0)  # so did the sum
    assert not hist.absorb([1] * (N + 1), 0.0, grown, 1.0)
    assert hist.counts == [0] * N and hist.total_s == 0.0


@given(st.lists(st.lists(st.integers(0, 50), min_size=N, max_size=N), max_size=6))
def test_absorbing_each_report_in_turn_equals_the_last_report(gains: list[list[int]]) -> None:
    hist, before, total = Latency(), [0] * N, 0.0
    for gain in gains:
        now = [b + g for b, g in zip(before, gain, strict=True)]
        assert hist.absorb(before, total, now, total + sum(gain))
        before, total = now, total + sum(gain)
    assert hist.counts == before and hist.total_s == total
