"""What follows a worker's exit (supervisor/exits.py), driven with plain facts (no processes)."""

from __future__ import annotations

import signal

from supervisor.config import HealthConfig
from supervisor.exits import (
    ExitFacts,
    FailSlot,
    RestartLater,
    Retired,
    StopCluster,
    SuccessorRuns,
    after_exit,
)
from supervisor.policy import ExitCause
from supervisor.state import WorkerState as S

H = HealthConfig(backoff_initial_s=0.1, backoff_max_s=30.0, flap_window_s=60.0,
                 flap_max_restarts=5, fail_max_restarts=10)


def test_a_drained_retirement_stops_and_is_not_counted() -> None:
    out = after_exit(ExitFacts(0, ExitCause.RELOAD, None, S.DRAINING), now=1.0,
                     restart_times=(), health=H, ever_ready=True)
    assert out.final is S.STOPPED and out.then == Retired() and not out.counted
    assert out.cause is ExitCause.RELOAD
    assert out.text == "stopped (reload), exited with code 0"


def test_a_retired_worker_that_never_drained_is_dead_but_not_restarted() -> None:
    out = after_exit(ExitFacts(-signal.SIGKILL, ExitCause.SCALE, None, S.STARTING), now=1.0,
                     restart_times=(), health=H, ever_ready=True)
    assert out.final is S.DEAD and out.then == Retired()


def test_any_exit_while_the_cluster_stops_is_retired() -> None:
    out = after_exit(ExitFacts(3, None, None, S.READY), now=1.0, restart_times=(), health=H,
                     ever_ready=True, stopping=True)
    assert out.then == Retired() and out.final is S.DEAD and out.cause is ExitCause.EXIT


def test_a_crash_restarts_after_the_first_backoff_step_and_counts() -> None:
    out = after_exit(ExitFacts(3, None, None, S.READY), now=1.0, restart_times=(), health=H,
                     ever_ready=True)
    assert out.then == RestartLater(0.1) and out.counted
    assert (out.final, out.cause, out.text) == (S.DEAD, ExitCause.EXIT, "exited with code 3")


def test_sigkill_we_did_not_send_reads_as_oom() -> None:
    out = after_exit(ExitFacts(-signal.SIGKILL, None, None, S.READY), now=1.0,
                     restart_times=(), health=H, ever_ready=True)
    assert out.cause is ExitCause.OOM and isinstance(out.then, RestartLater)


def test_a_flapping_slot_backs_off_with_a_reason() -> None:
    times = [95.0, 96.0, 97.0, 98.0, 99.0]  # five restarts in the window: the sixth flaps
    out = after_exit(ExitFacts(1, None, None, S.READY), now=100.0, restart_times=times,
                     health=H, ever_ready=True)
    assert out.then == RestartLater(3.2, "flapping: 6 restarts within 60s")


def test_too_many_restarts_fail_the_slot() -> None:
    times = [float(t) for t in range(91, 101)]
    out = after_exit(ExitFacts(1, None, None, S.READY), now=100.0, restart_times=times,
                     health=H, ever_ready=True)
    assert out.then == FailSlot("11 restarts within 60s; giving up on this slot")
    assert out.counted


def test_old_restarts_outside_the_window_are_forgotten() -> None:
    times = [float(t) for t in range(10, 30)]
    out = after_exit(ExitFacts(1, None, None, S.READY), now=100.0, restart_times=times,
                     health=H, ever_ready=True)
    assert out.then == RestartLater(0.1)


def test_a_boot_failure_before_any_worker_was_ready_stops_the_cluster() -> None:
    out = after_exit(ExitFacts(3, None, "ImportError: no app", S.STARTING), now=1.0,
                     restart_times=(), health=H, ever_ready=False)
    assert out.then == StopCluster() and out.counted
    assert (out.cause, out.text) == (ExitCause.BOOT_FAILED, "failed to boot: ImportError: no app")


def test_a_boot_failure_after_a_ready_worker_or_with_retry_restarts() -> None:
    facts = ExitFacts(3, None, "boom", S.STARTING)
    ready_once = after_exit(facts, now=1.0, restart_times=(), health=H, ever_ready=True)
    retry = after_exit(facts, now=1.0, restart_times=(), ever_ready=False,
                       health=HealthConfig(on_boot_failure="retry"))
    assert isinstance(ready_once.then, RestartLater) and isinstance(retry.then, RestartLater)


def test_the_halt_comes_before_a_running_successor() -> None:
    out = after_exit(ExitFacts(3, None, "boom", S.STARTING, successor_runs=True), now=1.0,
                     restart_times=(), health=H, ever_ready=False)
    assert out.then == StopCluster()


def test_a_successor_in_the_slot_means_nothing_to_restart_but_it_counts() -> None:
    out = after_exit(ExitFacts(1, None, None, S.READY, successor_runs=True), now=1.0,
                     restart_times=(), health=H, ever_ready=True)
    assert out.then == SuccessorRuns() and out.counted


def test_a_successor_wins_over_failing_the_slot() -> None:
    times = [float(t) for t in range(91, 101)]
    out = after_exit(ExitFacts(1, None, None, S.READY, successor_runs=True), now=100.0,
                     restart_times=times, health=H, ever_ready=True)
    assert out.then == SuccessorRuns()


def test_a_hard_stop_we_sent_is_restarted_under_its_own_cause() -> None:
    out = after_exit(ExitFacts(-signal.SIGTERM, ExitCause.HEARTBEAT, None, S.READY), now=1.0,
                     restart_times=(), health=H, ever_ready=True)
    assert out.cause is ExitCause.HEARTBEAT and isinstance(out.then, RestartLater)
    assert out.text == "stopped (heartbeat_timeout), killed by SIGTERM"
