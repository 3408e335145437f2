"""A slot's parked state changes only through the transition table."""

from __future__ import annotations

import pytest

from supervisor.handle import SlotRecord
from supervisor.state import InvalidTransition
from supervisor.state import WorkerState as S


def test_exit_backoff_fail_and_an_operator_restart() -> None:
    record = SlotRecord(0)
    record.park(S.DEAD, restart_at=1.0)
    assert (record.parked, record.restart_at_mono) == (S.DEAD, 1.0)
    record.unpark()
    assert record.parked is None and record.restart_at_mono is None
    record.park(S.BACKOFF, restart_at=5.0, reason="flapping")
    assert record.failure_reason == "flapping"
    record.park(S.FAILED, reason="gave up")
    assert record.parked is S.FAILED
    record.unpark()  # a reload takes a failed slot back
    assert record.parked is None


def test_a_slot_cannot_be_parked_as_a_running_state() -> None:
    with pytest.raises(InvalidTransition):
        SlotRecord(0).park(S.READY)


def test_a_stopped_slot_does_not_start_again() -> None:
    record = SlotRecord(0)
    record.park(S.STOPPED)
    with pytest.raises(InvalidTransition):
        record.unpark()
