from __future__ import annotations

from worker.adapter.sequence import Deduplicator, Sequencer, Verdict


def test_sequencer_counts_per_stream() -> None:
    seq = Sequencer()
    assert [seq.next(None), seq.next(None), seq.next("a"), seq.next(None)] == [1, 2, 1, 3]


def test_duplicates_dropped_gaps_counted() -> None:
    d = Deduplicator()
    assert d.check("n", False, 5) is Verdict.ACCEPT  # baseline: joined late
    assert d.check("n", False, 6) is Verdict.ACCEPT
    assert d.check("n", False, 6) is Verdict.DUPLICATE
    assert d.check("n", False, 4) is Verdict.DUPLICATE
    assert d.check("n", False, 9) is Verdict.ACCEPT
    assert (d.duplicates, d.lost) == (2, 2)
    # Directed and broadcast streams are independent; 0 is unsequenced.
    assert d.check("n", True, 1) is Verdict.ACCEPT
    assert d.check("n", False, 0) is Verdict.ACCEPT
    assert d.check("n", False, 0) is Verdict.ACCEPT
    d.forget("n")
    assert d.check("n", False, 1) is Verdict.ACCEPT
