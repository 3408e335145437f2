"""Commands the master's loop takes, whatever sent them.

A signal, an admin POST and a CLI verb (which POSTs to the admin listener)
all become one of these objects and wait in the master's queue; the loop
applies them one at a time through one table (:meth:`Master._apply`).
Signal handlers only enqueue: :data:`SIGNALS` says which command each
signal is.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

__all__ = ["SIGNALS", "Command", "DrainWorker", "Reload", "Scale", "ScaleBy", "Stop", "scaled"]


@dataclass(frozen=True, slots=True)
class Stop:
    """Graceful stop: drain every worker, then exit 0."""


@dataclass(frozen=True, slots=True)
class Reload:
    """Re-read the config and roll the workers, one slot at a time."""


@dataclass(frozen=True, slots=True)
class Scale:
    workers: int


@dataclass(frozen=True, slots=True)
class ScaleBy:
    delta: int


@dataclass(frozen=True, slots=True)
class DrainWorker:
    """Replace one worker gracefully: its successor starts, then it drains.

    ``pid``, when given, must still be the slot's process (the operator saw
    that one); otherwise the command is ignored.
    """

    slot: int
    pid: int | None = None


Command = Stop | Reload | Scale | ScaleBy | DrainWorker

SIGNALS: dict[signal.Signals, Command] = {
    signal.SIGTERM: Stop(),
    signal.SIGINT: Stop(),
    signal.SIGHUP: Reload(),
    signal.SIGTTIN: ScaleBy(1),
    signal.SIGTTOU: ScaleBy(-1),
}


def scaled(desired: int, command: Scale | ScaleBy) -> int:
    """The worker count a scale command asks for; never below one."""
    target = command.workers if isinstance(command, Scale) else desired + command.delta
    return max(1, target)
