from __future__ import annotations

from worker.adapter.sequence import BROADCAST, DIRECT, Deduplicator, Sequencer, Verdict


def test_sequencer_counts_per_stream() -> None:
    seq = Sequencer()
    assert [seq.next(None), seq.next(None), seq.next("a"), seq.next(None)] == [1, 2, 1, 3]


def test_duplicates_dropped_gaps_counted() -> None:
    d = Deduplicator()
    assert d.check("n", BROADCAST, 5) is Verdict.ACCEPT  # baseline: joined late
    assert d.check("n", BROADCAST, 6) is Verdict.ACCEPT
    assert d.check("n", BROADCAST, 6) is Verdict.DUPLICATE
    assert d.check("n", BROADCAST, 4) is Verdict.DUPLICATE
    assert d.check("n", BROADCAST, 9) is Verdict.ACCEPT
    assert (d.duplicates, d.lost) == (2, 2)
    # Directed and broadcast streams are independent; 0 is unsequenced.
    assert d.check("n", DIRECT, 1) is Verdict.ACCEPT
    assert d.check("n", BROADCAST, 0) is Verdict.ACCEPT
    assert d.check("n", BROADCAST, 0) is Verdict.ACCEPT
    d.forget("n")
    assert d.check("n", BROADCAST, 1) is Verdict.ACCEPT


def test_room_streams_start_a_new_baseline_after_unsubscribing() -> None:
    d = Deduplicator()
    assert d.check("n", "#r/lobby", 7) is Verdict.ACCEPT
    assert d.check("n", "#r/lobby", 8) is Verdict.ACCEPT
    assert d.check("m", "#r/lobby", 3) is Verdict.ACCEPT
    assert d.check("n", BROADCAST, 2) is Verdict.ACCEPT
    d.forget_stream("#r/lobby")  # the last local member left: unsubscribed
    assert d.check("n", "#r/lobby", 20) is Verdict.ACCEPT
    assert d.check("m", "#r/lobby", 9) is Verdict.ACCEPT
    assert d.lost == 0
    assert d.check("n", BROADCAST, 3) is Verdict.ACCEPT and d.lost == 0
    d.forget("n")
    assert d.check("n", "#r/lobby", 1) is Verdict.ACCEPT and d.lost == 0
