"""Run a workload's clients in several processes, between two barriers.

One Python process cannot drive a multi-process server to saturation, so the
client side of every workload is split into *shards*, one spawned process each
(fresh interpreter, uvloop).  They line up with the parent on two barriers::

    parent                           shard processes
    spawn ─────────────────────────► set up (open connections...)
    start.wait() ◄── window opens ─► start.wait()
    during(): sample the servers     run the load, or hold the connections
    stop.wait()  ◄── window closes ► stop.wait()
    read results ◄────────────────── tear down, send the result

Each shard measures its own CPU time (``getrusage``) inside the window, so the
report can show whether the generator, not the server, was the limit.  The
parent measures the servers' CPU (psutil, by pid) and the machine's over the
same window.  Every wait is bounded; a shard that fails aborts the barriers so
nobody waits for it, and leftover processes are killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import resource
import threading
import time
import traceback
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import psutil

from .limits import raise_nofile

__all__ = ["GeneratorError", "ShardContext", "ShardFn", "Window", "run_shards"]

_SPAWN = mp.get_context("spawn")


class GeneratorError(Exception):
    """A shard failed or the barriers timed out."""


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class ShardContext:
    """What a shard function gets besides its parameters; lives in the shard process."""

    index: int
    count: int
    start_barrier: Any
    stop_barrier: Any
    barrier_timeout_s: float
    cpu_s: float = 0.0
    _cpu_start: float = 0.0

    async def started(self) -> None:
        """Wait until every shard is set up: the measured window opens."""
        await asyncio.to_thread(self.start_barrier.wait, self.barrier_timeout_s)
        self._cpu_start = _cpu_s()

    async def stopped(self) -> None:
        """Close the measured window (waits for the other shards and the parent)."""
        self.cpu_s = _cpu_s() - self._cpu_start
        await asyncio.to_thread(self.stop_barrier.wait, self.barrier_timeout_s)


ShardFn = Callable[[ShardContext, Any], Coroutine[Any, Any, dict[str, Any]]]


def _child_main(fn: ShardFn, ctx: ShardContext, params: Any, conn: Connection) -> None:
    import uvloop

    raise_nofile()
    try:
        result = uvloop.run(fn(ctx, params))
        conn.send(("ok", result, ctx.cpu_s))
    except BaseException as exc:
        for barrier in (ctx.start_barrier, ctx.stop_barrier):
            with contextlib.suppress(Exception):
                barrier.abort()
        text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        with contextlib.suppress(Exception):
            conn.send(("error", f"shard {ctx.index}: {text}", 0.0))
    finally:
        conn.close()


@dataclass(frozen=True)
class Window:
    wall_s: float
    generator_cpu_pct: float  # all shards together, % of one core
    server_cpu_pct: float  # all server processes together, % of one core
    machine_cpu_pct: float  # whole machine, 0-100
    shards: int
    server_cpu_pct_by_role: dict[str, float]  # e.g. master / workers

    def to_json(self) -> dict[str, float]:
        doc = {"wall_s": round(self.wall_s, 3),
               "generator_cpu_pct": round(self.generator_cpu_pct, 1),
               "server_cpu_pct": round(self.server_cpu_pct, 1),
               "machine_cpu_pct": round(self.machine_cpu_pct, 1), "shards": self.shards}
        for role, pct in self.server_cpu_pct_by_role.items():
            doc[f"server_cpu_pct_{role}"] = round(pct, 1)
        return doc


def _cpu_of(pids_by_role: Mapping[str, Sequence[int]]) -> dict[str, float]:
    """CPU seconds so far of each role's processes."""
    out: dict[str, float] = {}
    for role, pids in pids_by_role.items():
        total = 0.0
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                t = psutil.Process(pid).cpu_times()
                total += t.user + t.system
        out[role] = total
    return out


def _wait(barrier: Any, timeout_s: float, what: str, procs: Sequence[Any]) -> None:
    """``barrier.wait`` that gives up as soon as a shard process has died."""
    broken: list[bool] = []

    def wait() -> None:
        try:
            barrier.wait(timeout_s)
        except threading.BrokenBarrierError:
            broken.append(True)

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    while waiter.is_alive():
        waiter.join(0.2)
        if waiter.is_alive() and any(not p.is_alive() for p in procs):
            with contextlib.suppress(Exception):
                barrier.abort()
    if broken:
        raise GeneratorError(f"generator: {what} barrier broken (a shard failed or timed out)")


def run_shards(
    fn: ShardFn,
    params: Sequence[Any],
    *,
    server_pids: Mapping[str, Sequence[int]],
    setup_timeout_s: float,
    run_timeout_s: float,
    teardown_timeout_s: float = 60.0,
    during: Callable[[], None] | None = None,
) -> tuple[list[dict[str, Any]], Window]:
    """Run ``fn(ctx, params[i])`` in ``len(params)`` processes; return their results."""
    count = len(params)
    start = _SPAWN.Barrier(count + 1)
    stop = _SPAWN.Barrier(count + 1)
    barrier_timeout = max(setup_timeout_s, run_timeout_s)
    procs: list[Any] = []
    conns: list[Connection] = []
    try:
        for index, shard_params in enumerate(params):
            parent_end, child_end = _SPAWN.Pipe(duplex=False)
            ctx = ShardContext(index, count, start, stop, barrier_timeout)
            proc = _SPAWN.Process(target=_child_main, args=(fn, ctx, shard_params, child_end),
                                  daemon=True, name=f"bench-shard-{index}")
            proc.start()
            child_end.close()
            procs.append(proc)
            conns.append(parent_end)
        try:
            _wait(start, setup_timeout_s, "start", procs)
            started = time.monotonic()
            server_cpu = _cpu_of(server_pids)
            psutil.cpu_percent(None)
            if during is not None:
                during()
            _wait(stop, run_timeout_s, "stop", procs)
            wall = time.monotonic() - started
            server_end = _cpu_of(server_pids)
            machine = psutil.cpu_percent(None)
        except GeneratorError as exc:
            raise GeneratorError(f"{exc}: {_errors(conns)}") from None
        results, gen_cpu = _collect(conns, teardown_timeout_s)
        by_role = {role: 100.0 * (server_end[role] - server_cpu[role]) / wall
                   for role in server_end}
        window = Window(wall, 100.0 * gen_cpu / wall, sum(by_role.values()), machine, count,
                        by_role)
        return results, window
    finally:
        for barrier in (start, stop):
            with contextlib.suppress(Exception):
                barrier.abort()
        for proc in procs:
            proc.join(5.0)
            if proc.is_alive():
                proc.kill()
                proc.join(5.0)
        for conn in conns:
            conn.close()


def _collect(conns: list[Connection], timeout_s: float) -> tuple[list[dict[str, Any]], float]:
    deadline = time.monotonic() + timeout_s
    results: list[dict[str, Any]] = []
    cpu = 0.0
    for conn in conns:
        if not conn.poll(max(0.0, deadline - time.monotonic())):
            raise GeneratorError("generator: a shard sent no result in time")
        status, payload, shard_cpu = conn.recv()
        if status != "ok":
            raise GeneratorError(str(payload))
        results.append(payload)
        cpu += shard_cpu
    return results, cpu


def _errors(conns: list[Connection]) -> str:
    errors = []
    for conn in conns:
        with contextlib.suppress(Exception):
            if conn.poll(2.0):
                status, payload, _ = conn.recv()
                if status == "error":
                    errors.append(str(payload))
    return "; ".join(errors) or "no shard reported an error"
