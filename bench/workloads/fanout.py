"""fan-out: one emitter, many listeners, broadcasts across every server process.

``fanout_clients`` websocket listeners spread over the server processes; one
more client, the emitter, sends ``fanout({"s": seq, "t": t})`` and the app
broadcasts ``tick`` to everyone else.  ``t`` is the emitter's
``time.monotonic()`` (one clock for every process of the machine), so a
listener's delivery latency is ``monotonic() - t``.

Closed loop with a window: the emitter sends broadcast ``seq`` only when
broadcast ``seq - fanout_window`` has reached *every* listener.  Each listener
process publishes the highest sequence number all of its listeners got (a
shared ``multiprocessing`` integer, its *watermark*), and the emitter reads the
minimum.  The system therefore runs at the fastest rate it sustains with a
bounded backlog, and the latency includes only that backlog.  A broadcast
that never completes (a lost delivery) stalls the emitter: after
``STALL_S`` it stops, and the run reports the loss.

Standalone servers cannot broadcast to each other on their own, so the
comparison is three clusters of the same size: siocluster with its ``local``
adapter, siocluster with its ``redis`` adapter, and standalone servers with
python-socketio's own ``AsyncRedisManager`` (the "direct" column).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from .. import protocol as p
from ..clients import WsClient
from ..lab import Lab
from ..loadgen import ShardContext
from ..model import Row, Run, Section
from ..stats import Histogram
from ..targets import Target
from .common import close_all, describe, http_session, open_many

__all__ = ["fanout"]

STALL_S = 10.0
_SPAWN_CTX = mp.get_context("spawn")


@dataclass(frozen=True)
class ListenerParams:
    urls: list[str]
    first: int
    clients: int
    concurrency: int
    watermark: Any  # multiprocessing RawValue("q")
    done: Any  # multiprocessing Event, set by the emitter
    wait_s: float
    auth: dict[str, Any] | None = None  # the CONNECT payload


@dataclass(frozen=True)
class EmitterParams:
    url: str
    duration_s: float
    window: int
    watermarks: list[Any]
    done: Any


class _Tally:
    """Per listener process: latencies, and the watermark of complete broadcasts."""

    def __init__(self, listeners: int, watermark: Any) -> None:
        self.listeners = listeners
        self.watermark = watermark
        self.hist = Histogram()
        self.pending: dict[int, int] = {}
        self.complete = 0

    def tick(self, data: dict[str, Any]) -> None:
        self.hist.record(time.monotonic() - data["t"])
        seq = data["s"]
        self.pending[seq] = self.pending.get(seq, 0) + 1
        while self.pending.get(self.complete + 1, 0) >= self.listeners:
            del self.pending[self.complete + 1]
            self.complete += 1
        self.watermark.value = self.complete


async def _listen(client: WsClient, tally: _Tally, errors: Counter[str]) -> None:
    try:
        while True:
            packet = p.parse_sio(await client.recv())
            if isinstance(packet, p.Event) and packet.name == "tick":
                tally.tick(packet.args[0])
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        errors[describe(exc)] += 1


async def listener_shard(ctx: ShardContext, params: ListenerParams) -> dict[str, Any]:
    errors: Counter[str] = Counter()
    async with http_session() as http:
        async def factory(i: int) -> WsClient:
            return await WsClient.connect(http, params.urls[i % len(params.urls)], params.auth)

        indices = range(params.first, params.first + params.clients)
        clients, connect_failures = await open_many(factory, indices, params.concurrency)
        tally = _Tally(len(clients), params.watermark)
        if not clients:  # nothing to wait for here: do not stall the emitter
            params.watermark.value = 2**62
        tasks = [asyncio.create_task(_listen(c, tally, errors)) for c in clients]
        await ctx.started()
        await asyncio.to_thread(params.done.wait, params.wait_s)
        await ctx.stopped()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await close_all(clients)
    return {"role": "listener", "hist": tally.hist, "listeners": len(clients),
            "connect_failures": dict(connect_failures), "errors": dict(errors)}


async def emitter_shard(ctx: ShardContext, params: EmitterParams) -> dict[str, Any]:
    async with http_session() as http:
        client = await WsClient.connect(http, params.url)

        async def drain() -> None:  # answers pings; the emitter expects nothing else
            with contextlib.suppress(Exception):
                while True:
                    await client.recv()

        reader = asyncio.create_task(drain())

        def low() -> int:
            return min(int(w.value) for w in params.watermarks)

        async def until(condition: Any) -> bool:
            deadline = time.monotonic() + STALL_S
            while not condition():
                if time.monotonic() > deadline:
                    return False
                await asyncio.sleep(0.0005)
            return True

        await ctx.started()
        seq, stalled = 0, False
        started = time.monotonic()
        try:
            while time.monotonic() - started < params.duration_s:
                if not await until(lambda n=seq: n - low() < params.window):
                    stalled = True
                    break
                seq += 1
                await client.emit("fanout", {"s": seq, "t": time.monotonic()})
            if not stalled:
                stalled = not await until(lambda n=seq: low() >= n)
            elapsed = time.monotonic() - started
        finally:
            params.done.set()
        await ctx.stopped()
        reader.cancel()
        await client.close()
    return {"role": "emitter", "sent": seq, "elapsed_s": elapsed, "stalled": stalled,
            "complete": low()}


async def fanout_shard(ctx: ShardContext, params: ListenerParams | EmitterParams
                       ) -> dict[str, Any]:
    if isinstance(params, EmitterParams):
        return await emitter_shard(ctx, params)
    return await listener_shard(ctx, params)


def _measure(lab: Lab, target: Target, auth: dict[str, Any] | None = None) -> Run:
    s = lab.settings
    done = _SPAWN_CTX.Event()
    listeners: list[ListenerParams] = []
    for first, count in lab.split(s.fanout_clients):
        mark = _SPAWN_CTX.RawValue("q", 0)
        listeners.append(ListenerParams(target.urls, first, count, s.connect_concurrency,
                                        mark, done, s.duration_s + 2 * STALL_S + 30.0, auth))
    emitter = EmitterParams(target.urls[0], s.duration_s, s.fanout_window,
                            [lp.watermark for lp in listeners], done)
    results, window = lab.measure(target, fanout_shard, [emitter, *listeners],
                                  setup_timeout_s=120.0,
                                  run_timeout_s=s.duration_s + 2 * STALL_S + 60.0)
    sent = results[0]
    parts = results[1:]
    hist = Histogram.merged(r["hist"] for r in parts)
    n = sum(r["listeners"] for r in parts)
    errors: Counter[str] = Counter()
    connect_failures: Counter[str] = Counter()
    for r in parts:
        errors.update(r["errors"])
        connect_failures.update(r["connect_failures"])
    expected = sent["sent"] * n
    lat = hist.to_json()
    elapsed = sent["elapsed_s"]
    return Run(target.label,
               metrics={"deliveries_per_s": hist.total / elapsed if elapsed > 0 else None,
                        "p50_ms": lat["p50_ms"], "p99_ms": lat["p99_ms"],
                        "lost": float(expected - hist.total)},
               window=window.to_json(),
               details={"balancer": target.balancer_stats(),
                        "listeners": n, "broadcasts": sent["sent"], "stalled": sent["stalled"],
                        "expected": expected, "received": hist.total, "latency": lat,
                        "elapsed_s": round(elapsed, 3), "errors": dict(errors),
                        "connect_failures": dict(connect_failures)})


def fanout(lab: Lab) -> Section:
    section = Section("fan-out")
    section.runs = lab.compare(
        [lambda: lab.cluster("local"), lambda: lab.cluster("redis"),
         lambda: lab.standalone(redis=True), *lab.peers()],
        lambda target: _measure(lab, target))
    base = "standalone/redis"
    for adapter in ("local", "redis"):
        for metric, key in (("deliveries/s", "deliveries_per_s"), ("p50 ms", "p50_ms"),
                            ("p99 ms", "p99_ms"), ("lost", "lost")):
            section.rows.append(Row(f"{metric} [{adapter}]", key, f"cluster/{adapter}", base,
                                    per_op="delivery" if key == "deliveries_per_s" else ""))
    s = lab.settings
    section.notes.append(
        f"{s.fanout_clients} listeners + 1 emitter, {s.fanout_window} broadcasts in flight, "
        f"{s.duration_s:g}s x {s.rounds} rounds; "
        "direct = standalone servers with socketio.AsyncRedisManager")
    return section
