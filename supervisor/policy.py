"""Restart policy: what to do when a worker process exits.  Pure functions.

* Any unexpected exit is replaced in the same slot after an exponential
  backoff: ``backoff_initial_s * 2**(restarts in the window - 1)``, capped at
  ``backoff_max_s``.  The first restart after a quiet window is immediate
  enough (0.1 s by default) that a killed worker is back within a second.
* Flapping: more than ``flap_max_restarts`` restarts inside ``flap_window_s``
  puts the slot in ``backoff`` (shown in /status, degrades /health); more than
  ``fail_max_restarts`` gives up: ``failed``.
* A boot failure (the app cannot be imported) before any worker was ever
  ready halts the master with the worker's traceback, unless
  ``on_boot_failure = "retry"``; later it is handled like any crash, so a bad
  deploy during a reload does not take down workers that still serve.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from .config import HealthConfig

__all__ = ["Action", "Decision", "ExitCause", "classify_exit", "decide_restart", "describe_exit"]


class ExitCause(StrEnum):
    EXIT = "exit"
    SIGNAL = "signal"
    OOM = "probably_oom"
    BOOT_FAILED = "boot_failed"
    HEARTBEAT = "heartbeat_timeout"
    RSS = "rss_limit"
    LIFETIME = "max_lifetime"
    BOOT_TIMEOUT = "boot_timeout"
    RELOAD = "reload"
    DRAIN = "drain"  # an operator asked (POST /drain, the dashboard)
    SCALE = "scale"
    SHUTDOWN = "shutdown"


class Action(StrEnum):
    RESTART = "restart"
    BACKOFF = "backoff"
    FAIL = "fail"
    HALT = "halt"


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    delay_s: float
    reason: str


def describe_exit(returncode: int, *, killed_by_us: bool) -> tuple[ExitCause, str]:
    """Turn a ``Popen.returncode`` into a cause and a human sentence."""
    if returncode < 0:
        signum = -returncode
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        if signum == signal.SIGKILL and not killed_by_us:
            return ExitCause.OOM, f"killed by {name} (probably OOM)"
        return ExitCause.SIGNAL, f"killed by {name}"
    return ExitCause.EXIT, f"exited with code {returncode}"


def decide_restart(
    restarts: Sequence[float],
    now: float,
    cause: ExitCause,
    health: HealthConfig,
    *,
    ever_ready: bool,
) -> Decision:
    """``restarts`` are the monotonic times of this slot's earlier restarts."""
    if cause is ExitCause.BOOT_FAILED and not ever_ready and health.on_boot_failure == "stop":
        return Decision(Action.HALT, 0.0, "the app failed to boot")
    recent = [t for t in restarts if now - t <= health.flap_window_s]
    count = len(recent) + 1
    if health.fail_max_restarts and count > health.fail_max_restarts:
        return Decision(
            Action.FAIL,
            0.0,
            f"{count} restarts within {health.flap_window_s:g}s; giving up on this slot",
        )
    delay = min(health.backoff_initial_s * 2 ** (count - 1), health.backoff_max_s)
    if health.flap_max_restarts and count > health.flap_max_restarts:
        return Decision(
            Action.BACKOFF, delay, f"flapping: {count} restarts within {health.flap_window_s:g}s"
        )
    return Decision(Action.RESTART, delay, "restart")


def classify_exit(returncode: int, stop_cause: ExitCause | None,
                  boot_error: str | None) -> tuple[ExitCause, str]:
    """Why a worker exited, and the sentence the log and /status show."""
    if boot_error is not None:
        return ExitCause.BOOT_FAILED, f"failed to boot: {boot_error}"
    if stop_cause is not None:
        how = describe_exit(returncode, killed_by_us=True)[1]
        return stop_cause, f"stopped ({stop_cause}), {how}"
    return describe_exit(returncode, killed_by_us=False)
