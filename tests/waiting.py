"""Wait on a condition, not on the clock.

A test that sleeps a fixed time and then looks is slow when the machine is
idle and flaky when it is busy.  These poll a predicate until it holds, and
fail with the last value seen when it does not within the timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["eventually", "eventually_async"]

T = TypeVar("T")


def eventually(probe: Callable[[], T], timeout_s: float = 10.0, interval_s: float = 0.05,
               what: str = "condition") -> T:
    """Call ``probe`` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout_s} s (last: {value!r})")
        time.sleep(interval_s)


async def eventually_async(probe: Callable[[], T], timeout_s: float = 5.0,
                           interval_s: float = 0.02, what: str = "condition") -> T:
    """:func:`eventually` for a running event loop (``probe`` must not block)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout_s} s (last: {value!r})")
        await asyncio.sleep(interval_s)
