"""The master's reconcile decisions, driven with plain facts (no processes)."""

from __future__ import annotations

from supervisor.plan import (
    DropSlot,
    FinishRecycle,
    Kill,
    PopReload,
    Recycle,
    Retire,
    SlotFacts,
    Spawn,
    StopHard,
    Timeouts,
    WorkerFacts,
    drain_target,
    lease_standing,
    plan,
    reload_slots,
)
from supervisor.policy import ExitCause
from supervisor.state import WorkerState as S

T = Timeouts(boot_timeout_s=30.0, heartbeat_timeout_s=10.0)


def ready(slot: int, gen: int, **kw: object) -> WorkerFacts:
    return WorkerFacts(slot, gen, S.READY, last_heartbeat=kw.pop("hb", 100.0), **kw)  # type: ignore[arg-type]


def test_empty_cluster_spawns_every_slot() -> None:
    assert plan(0.0, 3, {}, [], timeouts=T) == [Spawn(0, False), Spawn(1, False), Spawn(2, False)]


def test_a_full_cluster_does_nothing() -> None:
    workers = [ready(0, 1), ready(1, 2)]
    assert plan(100.0, 2, {0: SlotFacts(0), 1: SlotFacts(1)}, workers, timeouts=T) == []


def test_backoff_waits_for_its_time_then_counts_a_restart() -> None:
    slots = {0: SlotFacts(0, S.BACKOFF, restart_at=50.0)}
    assert plan(49.0, 1, slots, [], timeouts=T) == []
    assert plan(50.0, 1, slots, [], timeouts=T) == [Spawn(0, restart=True)]


def test_a_failed_slot_stays_empty() -> None:
    assert plan(99.0, 1, {0: SlotFacts(0, S.FAILED)}, [], timeouts=T) == []


def test_scale_down_retires_then_drops_the_slot() -> None:
    slots = {0: SlotFacts(0), 1: SlotFacts(1)}
    assert plan(100.0, 1, slots, [ready(0, 1), ready(1, 2)], timeouts=T) == [
        Retire((1, 2), ExitCause.SCALE)]
    draining = WorkerFacts(1, 2, S.DRAINING, stop_cause=ExitCause.SCALE)
    assert plan(100.0, 1, slots, [ready(0, 1), draining], timeouts=T) == []
    assert plan(100.0, 1, slots, [ready(0, 1)], timeouts=T) == [DropSlot(1)]


def test_a_roll_recycles_one_slot_at_a_time() -> None:
    slots = {0: SlotFacts(0), 1: SlotFacts(1)}
    workers = [ready(0, 1), ready(1, 2)]
    assert plan(100.0, 2, slots, workers, reload_queue=[0, 1], timeouts=T) == [
        PopReload(0), Recycle((0, 1), ExitCause.RELOAD)]
    # While slot 0's successor starts, slot 1 waits.
    starting = WorkerFacts(0, 3, S.STARTING, started=100.0)
    assert plan(101.0, 2, slots, [*workers, starting], reload_queue=[1],
                recycling={0: (0, 1)}, timeouts=T) == []
    # The successor is ready: the old one is retired, and the next slot may go.
    successor = ready(0, 3)
    assert plan(102.0, 2, slots, [*workers, successor], reload_queue=[1],
                recycling={0: (0, 1)}, timeouts=T) == [
        FinishRecycle(0), Retire((0, 1), ExitCause.RELOAD)]


def test_a_recycle_whose_successor_died_is_forgotten() -> None:
    slots = {0: SlotFacts(0)}
    assert plan(100.0, 1, slots, [ready(0, 1)], recycling={0: (0, 1)}, timeouts=T) == [
        FinishRecycle(0)]


def test_a_recycle_whose_old_process_left_is_forgotten() -> None:
    slots = {0: SlotFacts(0)}
    new = WorkerFacts(0, 3, S.STARTING, started=99.0)
    assert plan(100.0, 1, slots, [new], recycling={0: (0, 1)}, timeouts=T) == [FinishRecycle(0)]


def test_watch_kills_late_stoppers_and_stops_silent_or_slow_workers() -> None:
    workers = [
        WorkerFacts(0, 1, S.DRAINING, stop_cause=ExitCause.RELOAD, kill_at=99.0),
        WorkerFacts(1, 2, S.STARTING, started=60.0),
        ready(2, 3, hb=85.0),
        ready(3, 4, hb=95.0),
    ]
    slots = {i: SlotFacts(i) for i in range(4)}
    actions = plan(100.0, 4, slots, workers, timeouts=T)
    assert actions == [
        Spawn(0, restart=False),  # the draining process no longer counts as the slot's
        Kill((0, 1)),
        StopHard((1, 2), ExitCause.BOOT_TIMEOUT, "not ready within boot_timeout_s"),
        StopHard((2, 3), ExitCause.HEARTBEAT, "no heartbeat for 15.0s (event loop blocked?)"),
    ]


def test_a_stopping_worker_leaves_its_slot_to_be_refilled() -> None:
    slots = {0: SlotFacts(0)}
    stopping = WorkerFacts(0, 1, S.DRAINING, stop_cause=ExitCause.HEARTBEAT)
    assert plan(100.0, 1, slots, [stopping], timeouts=T) == [Spawn(0, restart=False)]


def test_a_reload_rolls_every_running_slot_below_desired_once_in_order() -> None:
    workers = [ready(2, 5), ready(0, 1), ready(0, 6),  # slot 0 mid-recycle: listed once
               WorkerFacts(1, 2, S.DRAINING, stop_cause=ExitCause.SCALE),  # already leaving
               ready(3, 4)]  # above desired: the trim retires it
    assert reload_slots(3, workers) == [0, 2]
    assert reload_slots(3, []) == []


def test_lease_standing_serving_and_leaving() -> None:
    w = ready(0, 1)
    assert lease_standing(w) == (True, False)
    assert lease_standing(WorkerFacts(0, 1, S.STARTING)) == (False, False)
    stopping = WorkerFacts(0, 1, S.READY, stop_cause=ExitCause.RELOAD, last_heartbeat=1.0)
    assert lease_standing(stopping) == (False, False)
    assert lease_standing(w, reload_queue=[0]) == (True, True)
    assert lease_standing(w, recycling={0: (0, 1)}) == (True, True)
    # The successor of a recycle is not leaving.
    assert lease_standing(ready(0, 2), recycling={0: (0, 1)}) == (True, False)


def test_an_operators_drain_picks_the_newest_active_process_of_the_slot() -> None:
    workers = [ready(0, 1, pid=11), ready(1, 2, pid=12),
               WorkerFacts(1, 3, S.STARTING, pid=13)]  # a successor started by hand
    assert drain_target(0, None, workers) == (0, 1)
    assert drain_target(1, None, workers) == (1, 3)
    assert drain_target(1, 12, workers) == (1, 2)


def test_a_drain_of_nothing_or_of_a_slot_being_replaced_is_ignored_with_a_reason() -> None:
    workers = [ready(0, 1, pid=11),
               WorkerFacts(2, 5, S.DRAINING, stop_cause=ExitCause.SCALE, pid=15)]
    assert drain_target(1, None, workers) == "no such worker"
    assert drain_target(0, 99, workers) == "no such worker"
    assert drain_target(2, None, workers) == "no such worker"  # already stopping
    assert drain_target(0, None, workers, recycling={0: (0, 1)}) == "already being replaced"
