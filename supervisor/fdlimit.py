"""Open files: a master that runs out of descriptors stops accepting, and the
whole cluster goes dark.  So the master raises its soft ``RLIMIT_NOFILE`` to
the hard limit at start (workers inherit it), /metrics shows every process's
open descriptors against its limit, and /health turns degraded, naming the
process, once one of them uses more than :data:`WARN_FRACTION` of its limit.

:func:`fd_pressure` is pure; :func:`raise_nofile_limit` is the one system call.
"""

from __future__ import annotations

import resource
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["WARN_FRACTION", "FdUsage", "fd_pressure", "raise_nofile_limit"]

WARN_FRACTION = 0.8


@dataclass(frozen=True, slots=True)
class FdUsage:
    who: str  # "master", "worker 1"
    fds: int
    limit: int  # the soft limit; 0 when unknown (or unlimited)


def fd_pressure(usages: Iterable[FdUsage]) -> list[str]:
    """/health reasons for the processes above :data:`WARN_FRACTION` of their limit."""
    return [
        f"{u.who} has {u.fds} of {u.limit} open files ({u.fds * 100 // u.limit}%)"
        for u in usages
        if u.limit > 0 and u.fds > WARN_FRACTION * u.limit
    ]


def raise_nofile_limit() -> tuple[int, int, int]:
    """Raise the soft open-files limit to the hard one: (soft before, soft now, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            return soft, soft, hard
        return soft, hard, hard
    return soft, soft, hard
