from __future__ import annotations

import pytest

from supervisor.state import TRANSITIONS, InvalidTransition, WorkerState, check_transition

S = WorkerState


def test_happy_path_and_restart_cycle() -> None:
    state = S.STARTING
    for nxt in (S.READY, S.DRAINING, S.STOPPED):
        state = check_transition(state, nxt)
    state = S.READY
    for nxt in (S.DEAD, S.BACKOFF, S.STARTING, S.READY):
        state = check_transition(state, nxt)


@pytest.mark.parametrize(("a", "b"), [(S.STOPPED, S.STARTING), (S.READY, S.STARTING),
                                      (S.DRAINING, S.READY), (S.FAILED, S.READY)])
def test_invalid(a: WorkerState, b: WorkerState) -> None:
    with pytest.raises(InvalidTransition):
        check_transition(a, b)


def test_every_state_has_a_row() -> None:
    assert set(TRANSITIONS) == set(WorkerState)
