"""connect-storm: many new sessions at once, the way a browser opens one.

Each session does the Engine.IO polling handshake (GET), joins ``/`` (POST
``40``, GET ``40{...}``), upgrades to a websocket (``2probe``/``3probe``/``5``),
checks the session works with one emit-with-ack over the websocket, and
closes.  ``storm_sessions`` of them run with ``connect_concurrency`` in flight
per generator process.  Figures: completed sessions per second, and failed
sessions (any error or timeout: "Session ID unknown" from a misrouted request
shows up here).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ..clients import connect_upgraded
from ..lab import Lab
from ..loadgen import ShardContext
from ..model import Row, Run, Section
from ..stats import Histogram
from ..targets import Target
from .common import describe, http_session

__all__ = ["connect_storm"]

SESSION_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class StormParams:
    urls: list[str]
    first: int
    sessions: int
    concurrency: int


async def storm_shard(ctx: ShardContext, params: StormParams) -> dict[str, Any]:
    hist = Histogram()
    failures: Counter[str] = Counter()
    gate = asyncio.Semaphore(params.concurrency)
    async with http_session() as http:

        async def session(index: int) -> None:
            async with gate:
                started = time.monotonic()
                try:
                    async with asyncio.timeout(SESSION_TIMEOUT_S):
                        client = await connect_upgraded(http, params.urls[index % len(params.urls)])
                        try:
                            if await client.call("echo", index) != [index]:
                                raise ValueError("wrong echo")
                        finally:
                            await client.close()
                except Exception as exc:
                    failures[describe(exc)] += 1
                    return
                hist.record(time.monotonic() - started)

        await ctx.started()
        started = time.monotonic()
        await asyncio.gather(*(session(i) for i in
                               range(params.first, params.first + params.sessions)))
        elapsed = time.monotonic() - started
        await ctx.stopped()
    return {"hist": hist, "failures": dict(failures), "elapsed_s": elapsed}


def _measure(lab: Lab, target: Target) -> Run:
    s = lab.settings
    params = [StormParams(target.urls, first, count, s.connect_concurrency)
              for first, count in lab.split(s.storm_sessions)]
    results, window = lab.measure(target, storm_shard, params, setup_timeout_s=60.0,
                                  run_timeout_s=SESSION_TIMEOUT_S * 4 + 60.0)
    hist = Histogram.merged(r["hist"] for r in results)
    failures: Counter[str] = Counter()
    for r in results:
        failures.update(r["failures"])
    elapsed = max(r["elapsed_s"] for r in results)
    lat = hist.to_json()
    return Run(target.label,
               metrics={"sessions_per_s": hist.total / elapsed if elapsed > 0 else None,
                        "failures": float(sum(failures.values())),
                        "p99_ms": lat["p99_ms"]},
               window=window.to_json(),
               details={"balancer": target.balancer_stats(),
                        "sessions": s.storm_sessions, "completed": hist.total,
                        "elapsed_s": round(elapsed, 3), "session_latency": lat,
                        "failures": dict(failures)})


def connect_storm(lab: Lab) -> Section:
    section = Section("connect-storm")
    section.runs = lab.compare([lab.cluster, lab.standalone, *lab.peers()],
                               lambda target: _measure(lab, target))
    cluster_label = section.runs[0].target
    for metric, key in (("sessions/s", "sessions_per_s"), ("failed sessions", "failures"),
                        ("session p99 ms", "p99_ms")):
        section.rows.append(Row(metric, key, cluster_label, "standalone",
                                per_op="session" if key == "sessions_per_s" else ""))
    section.notes.append(
        f"{lab.settings.storm_sessions} sessions: polling handshake, join, websocket upgrade, "
        f"one ack, close; {lab.settings.connect_concurrency} in flight per generator process; "
        f"{lab.settings.rounds} rounds")
    return section
