from __future__ import annotations

import pytest

from supervisor.history import History, Totals, make_point, quantile

BOUNDS = (0.001, 0.01, 0.1, 1.0)


def test_quantile_interpolates_inside_the_bucket() -> None:
    assert quantile(BOUNDS, [0, 0, 0, 0, 0], 0.5) is None
    # 10 requests all in (0.001, 0.01]: the median is halfway through that bucket.
    assert quantile(BOUNDS, [0, 10, 0, 0, 0], 0.5) == pytest.approx(0.0055)
    # 99 fast ones and one slow: p99 is the top of the fast bucket, p50 inside it.
    counts = [99, 0, 0, 1, 0]
    assert quantile(BOUNDS, counts, 0.99) == pytest.approx(0.001)
    assert quantile(BOUNDS, counts, 0.5) == pytest.approx(0.001 * 50 / 99)
    # Past the last bound, the last bound is all a histogram knows.
    assert quantile(BOUNDS, [0, 0, 0, 0, 3], 0.99) == 1.0


def test_rates_come_from_the_growth_of_each_live_worker() -> None:
    before = Totals(t=1000.0, mono=10.0, messages={(0, 1): 100, (1, 1): 50}, handshakes=7,
                    latency_counts=[1, 0, 0, 0, 0])
    # Worker 1 was replaced (generation 2 starts from 0); worker 0 grew by 40.
    after = Totals(t=1002.0, mono=12.0, connections=9, messages={(0, 1): 140, (1, 2): 20},
                   handshakes=11, latency_counts=[1, 4, 0, 0, 0], rss_bytes={0: 52428800},
                   restarts=1)
    point = make_point(3, before, after, BOUNDS)
    assert point.messages_per_s == 30.0  # (40 + 20) / 2 s
    assert point.handshakes_per_s == 2.0
    assert point.p50_ms == pytest.approx(5.5)  # only the 4 requests in between
    assert point.as_dict() == {
        "id": 3, "t": 1002.0, "connections": 9, "messages_per_s": 30.0,
        "handshakes_per_s": 2.0, "p50_ms": 5.5, "p99_ms": 9.91,
        "rss_mb": {"0": 50.0}, "restarts": 1,
    }


def test_the_first_point_has_no_rates_and_a_counter_reset_is_not_negative() -> None:
    first = make_point(1, None, Totals(t=1.0, mono=1.0, handshakes=5), BOUNDS)
    assert (first.messages_per_s, first.handshakes_per_s, first.p50_ms) == (0.0, 0.0, None)
    shrunk = make_point(2, Totals(t=1.0, mono=1.0, messages={(0, 1): 9}),
                        Totals(t=2.0, mono=2.0, messages={(0, 1): 3}), BOUNDS)
    assert shrunk.messages_per_s == 0.0


def test_the_ring_is_bounded_and_streams_what_is_new() -> None:
    history = History(BOUNDS, maxlen=3)
    for i in range(5):
        history.add(Totals(t=float(i), mono=float(i), connections=i))
    assert [p.connections for p in history.points] == [2, 3, 4]
    assert [p.id for p in history.since(4)] == [5]
