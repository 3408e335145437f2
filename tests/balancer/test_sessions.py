from __future__ import annotations

from balancer.sessions import SessionLedger

A, B = "203.0.113.7", "198.51.100.2"
W1, W2 = (0, 1), (1, 1)


def test_reports_are_summed_over_workers() -> None:
    ledger = SessionLedger()
    ledger.reported(W1, {A: 2, B: 1}, now=0.0)
    ledger.reported(W2, {A: 3}, now=0.0)
    assert ledger.count(A, 0.0) == 5
    assert ledger.count(B, 0.0) == 1
    assert ledger.count("192.0.2.1", 0.0) == 0


def test_a_report_replaces_that_workers_count_and_zero_removes_it() -> None:
    ledger = SessionLedger()
    ledger.reported(W1, {A: 2}, now=0.0)
    ledger.reported(W1, {A: 1}, now=1.0)
    assert ledger.count(A, 1.0) == 1
    ledger.reported(W1, {A: 0}, now=2.0)
    assert ledger.count(A, 2.0) == 0
    assert ledger.addresses() == 0


def test_forwarded_handshakes_count_until_a_later_report_settles_them() -> None:
    ledger = SessionLedger(grace_s=1.0)
    ledger.forwarded(W1, A, now=10.0)
    ledger.forwarded(W1, A, now=10.1)
    assert ledger.count(A, 10.2) == 2
    # A report received within the grace period may not include them: still pending.
    ledger.reported(W1, {A: 2}, now=10.5)
    assert ledger.count(A, 10.5) == 4  # errs high, briefly
    ledger.reported(W1, {}, now=11.5)
    assert ledger.count(A, 11.5) == 2


def test_pending_is_per_worker() -> None:
    ledger = SessionLedger(grace_s=1.0)
    ledger.forwarded(W1, A, now=0.0)
    ledger.forwarded(W2, A, now=0.0)
    ledger.reported(W1, {A: 1}, now=5.0)
    assert ledger.count(A, 5.0) == 2  # W2 has not reported yet


def test_pending_expires_without_reports() -> None:
    ledger = SessionLedger()
    ledger.forwarded(W1, A, now=0.0)
    assert ledger.count(A, 9.0) == 1
    assert ledger.count(A, 11.0) == 0


def test_a_worker_that_is_gone_takes_its_sessions() -> None:
    ledger = SessionLedger()
    ledger.reported(W1, {A: 2}, now=0.0)
    ledger.reported(W2, {A: 1}, now=0.0)
    ledger.forwarded(W1, A, now=0.5)
    ledger.forget(W1)
    assert ledger.count(A, 0.5) == 1
    ledger.forget(W1)  # twice is harmless
    assert ledger.count(A, 0.5) == 1
