from __future__ import annotations

import resource

from supervisor.fdlimit import FdUsage, fd_pressure, raise_nofile_limit


def test_pressure_names_the_process_over_80_percent() -> None:
    reasons = fd_pressure([
        FdUsage("master", 81, 100), FdUsage("worker 0", 80, 100), FdUsage("worker 1", 5, 0),
    ])
    assert reasons == ["master has 81 of 100 open files (81%)"]


def test_no_pressure_when_the_limit_is_unknown() -> None:
    assert fd_pressure([FdUsage("worker 3", 10**6, 0)]) == []


def test_raise_reaches_the_hard_limit() -> None:
    before, now, hard = raise_nofile_limit()
    assert before <= now
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == now
    if hard != resource.RLIM_INFINITY:
        assert now == hard
