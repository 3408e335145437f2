"""CPU per operation of the cluster's processes: ``python -m bench.cpu WORKLOAD``.

A probe for a before/after of one change, not a comparison with the peers: it
starts a fresh cluster (``bench_app``, the local adapter) for each round, runs
one load from this process, and prints the CPU microseconds the master and the
workers spent per operation (from ``/proc/<pid>/stat``), which moves much less
than a rate when the machine is shared.  Run it in the two checkouts in turn,
several rounds each, and compare the medians.

* ``fan-out``: ``--clients`` WebSocket listeners and one emitter broadcasting
  with 4 broadcasts in flight; per delivery;
* ``ws-sessions``: ``--clients`` clients opening a WebSocket session (no
  polling) and closing it, in a loop; per session;
* ``polling``: ``--clients`` polling clients, emit-with-ack in a closed loop;
  per ack.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from . import targets
from .clients import PollingClient, WsClient
from .workloads.common import http_session

__all__ = ["main"]

def _ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


class Meter:
    """The processes' CPU from :meth:`start` (after the clients connected) on."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self._ticks: list[int] = []
        self._started = 0.0

    def start(self) -> None:
        self._ticks = [_ticks(p) for p in self.pids]
        self._started = time.monotonic()

    def stop(self) -> tuple[float, list[float]]:
        """Seconds since :meth:`start`, and each process's CPU microseconds."""
        hz = os.sysconf("SC_CLK_TCK")
        spent = [(_ticks(p) - t) * 1e6 / hz for p, t in zip(self.pids, self._ticks, strict=True)]
        return time.monotonic() - self._started, spent


Load = Callable[[str, int, float, Meter], Awaitable[int]]


async def _fan_out(url: str, clients: int, seconds: float, meter: Meter) -> int:
    async with http_session() as http:
        listeners = await asyncio.gather(*(WsClient.connect(http, url) for _ in range(clients)))
        got = 0

        async def listen(client: WsClient) -> None:
            nonlocal got
            while True:
                await client.recv()
                got += 1

        tasks = [asyncio.create_task(listen(c)) for c in listeners]
        emitter = await WsClient.connect(http, url)
        meter.start()
        end, sent, first = time.monotonic() + seconds, 0, got
        while time.monotonic() < end:
            await emitter.call("fanout", {"s": sent})
            sent += 1
            while sent * clients - got > 4 * clients:
                await asyncio.sleep(0.001)
        while got - first < sent * clients and time.monotonic() < end + 5:
            await asyncio.sleep(0.001)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return got - first


async def _ws_sessions(url: str, clients: int, seconds: float, meter: Meter) -> int:
    async with http_session() as http:
        meter.start()
        done, end = 0, time.monotonic() + seconds

        async def loop() -> None:
            nonlocal done
            while time.monotonic() < end:
                client = await WsClient.connect(http, url)
                await client.close()
                done += 1

        await asyncio.gather(*(loop() for _ in range(clients)))
        return done


async def _polling(url: str, clients: int, seconds: float, meter: Meter) -> int:
    async with http_session() as http:
        sessions = [await PollingClient.connect(http, url) for _ in range(clients)]
        meter.start()
        done, end = 0, time.monotonic() + seconds

        async def loop(client: PollingClient) -> None:
            nonlocal done
            while time.monotonic() < end:
                await client.call("echo", "x")
                done += 1

        await asyncio.gather(*(loop(c) for c in sessions))
        return done


LOADS: dict[str, tuple[Load, str, int]] = {
    "fan-out": (_fan_out, "delivery", 500),
    "ws-sessions": (_ws_sessions, "session", 20),
    "polling": (_polling, "ack", 32),
}
PLURAL = {"delivery": "deliveries", "session": "sessions", "ack": "acks"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu", description=__doc__.split("\n")[0])
    parser.add_argument("workload", choices=sorted(LOADS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=0, help="default: per workload")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    load, unit, default_clients = LOADS[args.workload]
    clients = args.clients or default_clients
    master_us: list[float] = []
    workers_us: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-cpu-") as logs:
        for round_ in range(1, args.rounds + 1):
            with targets.cluster(args.workers, adapter="local", log_dir=Path(logs)) as target:
                meter = Meter([*target.pids["master"], *target.pids["workers"]])
                ops = asyncio.run(load(target.urls[0], clients, args.seconds, meter))
                elapsed, spent = meter.stop()
            master_us.append(spent[0] / max(ops, 1))
            workers_us.append(sum(spent[1:]) / max(ops, 1))
            print(f"round {round_}: {ops / elapsed:,.0f} {PLURAL[unit]}/s; CPU us per {unit}: "
                  f"master {master_us[-1]:.1f}, workers {workers_us[-1]:.1f}", flush=True)
    print(f"median of {args.rounds}: master {statistics.median(master_us):.1f}, "
          f"workers {statistics.median(workers_us):.1f} CPU us per {unit} "
          f"({args.workload}, {args.workers} workers, {clients} clients)")


if __name__ == "__main__":
    main()
