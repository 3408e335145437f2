from __future__ import annotations

import signal

from supervisor.config import HealthConfig
from supervisor.policy import Action, ExitCause, classify_exit, decide_restart, describe_exit

H = HealthConfig(backoff_initial_s=0.1, backoff_max_s=10, flap_window_s=60,
                 flap_max_restarts=3, fail_max_restarts=5)


def test_first_restart_is_fast() -> None:
    d = decide_restart([], 100.0, ExitCause.SIGNAL, H, ever_ready=True)
    assert d.action is Action.RESTART and d.delay_s == 0.1


def test_backoff_grows_then_flaps_then_fails() -> None:
    actions = []
    delays = []
    history: list[float] = []
    for i in range(6):
        d = decide_restart(history, 100.0 + i, ExitCause.EXIT, H, ever_ready=True)
        actions.append(d.action)
        delays.append(d.delay_s)
        history.append(100.0 + i)
    assert actions == [Action.RESTART] * 3 + [Action.BACKOFF] * 2 + [Action.FAIL]
    assert delays[:5] == [0.1, 0.2, 0.4, 0.8, 1.6]


def test_old_restarts_leave_the_window() -> None:
    history = [0.0, 1.0, 2.0, 3.0, 4.0]
    d = decide_restart(history, 1000.0, ExitCause.EXIT, H, ever_ready=True)
    assert d.action is Action.RESTART and d.delay_s == 0.1


def test_boot_failure_halts_only_at_startup() -> None:
    assert decide_restart([], 1.0, ExitCause.BOOT_FAILED, H, ever_ready=False).action is Action.HALT
    assert decide_restart([], 1.0, ExitCause.BOOT_FAILED, H,
                          ever_ready=True).action is Action.RESTART
    retry = HealthConfig(on_boot_failure="retry")
    assert decide_restart([], 1.0, ExitCause.BOOT_FAILED, retry,
                          ever_ready=False).action is Action.RESTART


def test_describe_exit() -> None:
    assert describe_exit(-signal.SIGKILL, killed_by_us=False) == (
        ExitCause.OOM, "killed by SIGKILL (probably OOM)")
    assert describe_exit(-signal.SIGKILL, killed_by_us=True)[0] is ExitCause.SIGNAL
    assert describe_exit(-signal.SIGSEGV, killed_by_us=False)[1] == "killed by SIGSEGV"
    assert describe_exit(1, killed_by_us=False) == (ExitCause.EXIT, "exited with code 1")


def test_classify_exit() -> None:
    assert classify_exit(3, None, "cannot import app") == (
        ExitCause.BOOT_FAILED, "failed to boot: cannot import app")
    cause, text = classify_exit(-signal.SIGTERM, ExitCause.RELOAD, None)
    assert cause is ExitCause.RELOAD and text.startswith("stopped (reload), ")
    assert classify_exit(1, None, None) == describe_exit(1, killed_by_us=False)
