"""The decorator, the emit fence, and the runner against an in-process lease table.

The lease backend here is the real :class:`~worker.lease.LeaseTable` called
directly (what the master does for the local backend, minus the socket); the
cluster wiring is proved by tests/integration/test_singleton.py.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Iterator
from typing import Any

import pytest

from worker import singleton as singleton_module
from worker.lease import Grant, Holder, HolderLease, LeaseTable
from worker.singleton import LeaseLost, Tenure, current_tenure, install_fence, singleton
from worker.singleton_runner import SingletonRunner


@pytest.fixture(autouse=True)
def empty_registry() -> Iterator[None]:
    singleton_module._clear_registry()
    yield
    singleton_module._clear_registry()


def test_decorator_checks_what_it_is_given() -> None:
    with pytest.raises(ValueError, match="name"):
        singleton("")
    with pytest.raises(ValueError, match="name"):
        singleton("has space")
    with pytest.raises(TypeError, match="async def"):
        singleton("a")(lambda: None)  # type: ignore[arg-type,return-value]

    async def takes_args(x: int) -> None: ...

    with pytest.raises(TypeError, match="no arguments"):
        singleton("a")(takes_args)  # type: ignore[arg-type]

    @singleton("a")
    async def first() -> None: ...

    async def other() -> None: ...

    with pytest.raises(ValueError, match="already"):
        singleton("a")(other)
    assert [s.name for s in singleton_module.registered()] == ["a"]
    assert singleton("a")(first) is first, "the same function twice is fine"
    assert [s.func for s in singleton_module.registered()] == [first]


class Manager:
    """Stands in for python-socketio's client manager: records what was emitted."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def emit(self, event: str, data: Any, **kwargs: Any) -> None:
        self.sent.append((event, data))


def test_fence_refuses_an_emit_once_the_lease_ran_out() -> None:
    manager = Manager()
    install_fence(manager)
    install_fence(manager)  # idempotent
    lease = HolderLease(1.0, 0.2)
    lease.on_reply(lease.begin(time.monotonic()), True, Grant(Holder("k", "h", 0, 1), 1, 0.0),
                   time.monotonic())

    async def main() -> None:
        async def body() -> None:
            await manager.emit("tick", 1)
            lease.valid_until = time.monotonic() - 0.01  # as if paused past the lease
            await manager.emit("tick", 2)

        context = contextvars.copy_context()
        context.run(current_tenure.set, Tenure("t", lease, 1))
        task = asyncio.get_running_loop().create_task(body(), context=context)
        with pytest.raises(LeaseLost):
            await task
        assert task.cancelled()
        await manager.emit("outside a singleton", 3)  # no tenure: never fenced

    asyncio.run(main())
    assert manager.sent == [("tick", 1), ("outside a singleton", 3)]


class TableBackend:
    """The master's lease table, called in-process."""

    def __init__(self, table: LeaseTable, key: str) -> None:
        self.table, self.holder = table, Holder(key, "host", int(key), 100 + int(key))
        self.released: list[str] = []

    async def request(self, name: str, seq: int, eligible: bool) -> tuple[bool, Grant | None]:
        d = self.table.request(name, self.holder, eligible=eligible, now=time.monotonic(),
                               wall=time.time())
        return d.granted, d.current

    async def release(self, name: str, token: int) -> None:
        self.released.append(name)
        self.table.release(name, self.holder.key, token)

    async def close(self) -> None:
        return None

    def set_lost_hook(self, lost: Any) -> None:
        pass


class Sio:
    def __init__(self) -> None:
        self.manager = Manager()


def test_runner_runs_on_one_worker_and_hands_over_on_stop() -> None:
    runs: list[str] = []
    running = asyncio.Event

    async def main() -> None:
        started = running()
        who = contextvars.ContextVar("who", default="")

        @singleton("job")
        async def job() -> None:
            runs.append(who.get())
            started.set()
            await asyncio.sleep(3600)

        table = LeaseTable(0.6)
        backends = [TableBackend(table, str(i)) for i in range(2)]
        runners = []
        for i, backend in enumerate(backends):
            runner = SingletonRunner(singleton_module.registered(), backend, lease_s=0.6,
                                     heartbeat_s=1.0)
            context = contextvars.copy_context()
            context.run(who.set, str(i))
            context.run(runner.start, Sio())
            runners.append(runner)
        await asyncio.wait_for(started.wait(), 2)
        await asyncio.sleep(0.5)
        assert len(runs) == 1
        first = int(runs[0])
        holder_report = runners[first].report()["job"]
        assert holder_report.held and holder_report.current is not None
        assert not runners[1 - first].report()["job"].held
        await runners[first].stop(1.0)
        assert backends[first].released == ["job"]
        await asyncio.sleep(0.5)  # the other one's next poll (0.2 s) acquires
        assert runs == [str(first), str(1 - first)]
        assert runners[1 - first].report()["job"].held
        await runners[1 - first].stop(1.0)

    asyncio.run(main())


def test_runner_restarts_a_failing_function_and_counts_it(monkeypatch: Any) -> None:
    monkeypatch.setattr("worker.singleton_runner._BACKOFF_INITIAL_S", 0.05)
    calls: list[float] = []

    async def main() -> None:
        @singleton("flaky")
        async def flaky() -> None:
            calls.append(time.monotonic())
            raise RuntimeError("boom")

        runner = SingletonRunner(singleton_module.registered(),
                                 TableBackend(LeaseTable(1.0), "0"), lease_s=1.0,
                                 heartbeat_s=1.0)
        runner.start(Sio())
        await asyncio.sleep(0.5)
        assert runner.report()["flaky"].errors >= 2
        await runner.stop(1.0)

    asyncio.run(main())
    assert len(calls) >= 2
