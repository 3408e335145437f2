"""idle-memory: what an open, silent websocket costs each server process.

RSS of every server process is sampled once the target is up (after
``settle_s``), then ``idle_connections`` websocket sessions are opened and
held (answering the server's pings), and RSS is sampled again after another
``settle_s``.  Growth divided by the sessions actually open gives bytes per
connection, by role: the cluster's master (which relays every websocket) and
its workers, and the standalone servers.  The key figure is the master's: it
should stay near zero once websockets are handed off to the workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import psutil

from ..clients import WsClient
from ..lab import Lab
from ..loadgen import ShardContext
from ..model import Row, Run, Section
from ..targets import Target
from .common import close_all, describe, http_session, open_many

__all__ = ["idle_memory"]


@dataclass(frozen=True)
class IdleParams:
    urls: list[str]
    first: int
    connections: int
    concurrency: int
    auth: dict[str, Any] | None = None  # the CONNECT payload


async def _hold(client: WsClient, errors: Counter[str]) -> None:
    try:
        while True:
            await client.recv()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        errors[describe(exc)] += 1


async def idle_shard(ctx: ShardContext, params: IdleParams) -> dict[str, Any]:
    errors: Counter[str] = Counter()
    async with http_session() as http:
        async def factory(i: int) -> WsClient:
            return await WsClient.connect(http, params.urls[i % len(params.urls)], params.auth)

        started = time.monotonic()
        indices = range(params.first, params.first + params.connections)
        clients, connect_failures = await open_many(factory, indices, params.concurrency)
        open_s = time.monotonic() - started
        holders = [asyncio.create_task(_hold(c, errors)) for c in clients]
        await ctx.started()
        await ctx.stopped()
        dropped = sum(1 for h in holders if h.done())
        for holder in holders:
            holder.cancel()
        await asyncio.gather(*holders, return_exceptions=True)
        await close_all(clients, timeout_s=60.0)
    return {"opened": len(clients), "open_s": open_s, "dropped": dropped,
            "connect_failures": dict(connect_failures), "errors": dict(errors)}


def _rss(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            total += psutil.Process(pid).memory_info().rss
    return total


def _measure(lab: Lab, target: Target, auth: dict[str, Any] | None = None) -> Run:
    s = lab.settings
    time.sleep(s.settle_s)
    before = {role: _rss(pids) for role, pids in target.pids.items()}
    after: dict[str, int] = {}

    def sample() -> None:
        time.sleep(s.settle_s)
        after.update({role: _rss(pids) for role, pids in target.pids.items()})

    params = [IdleParams(target.urls, first, count, s.connect_concurrency, auth)
              for first, count in lab.split(s.idle_connections)]
    results, window = lab.measure(target, idle_shard, params, setup_timeout_s=300.0,
                                  run_timeout_s=s.settle_s + 60.0, during=sample)
    opened = sum(r["opened"] for r in results)
    failures: Counter[str] = Counter()
    for r in results:
        failures.update(r["connect_failures"])
    metrics: dict[str, float | None] = {}
    for role in before:
        growth = after.get(role, 0) - before[role]
        metrics[f"{role}_kb_per_conn"] = growth / opened / 1024 if opened else None
    total = sum(after.values()) - sum(before.values())
    metrics["total_kb_per_conn"] = total / opened / 1024 if opened else None
    metrics["failures"] = float(sum(failures.values()))
    return Run(target.label, metrics=metrics, window=window.to_json(),
               details={"balancer": target.balancer_stats(),
                        "connections": s.idle_connections, "opened": opened,
                        "open_s": round(max(r["open_s"] for r in results), 2),
                        "dropped_while_idle": sum(r["dropped"] for r in results),
                        "rss_before_bytes": before, "rss_after_bytes": after,
                        "connect_failures": dict(failures)})


def idle_memory(lab: Lab) -> Section:
    section = Section("idle-memory")
    # One round: a second one would start from a heap the first one grew.
    section.runs = lab.compare([lab.cluster, lab.standalone],
                               lambda target: _measure(lab, target), rounds=1)
    cluster_label = section.runs[0].target
    rows = (("master KB/conn", "master_kb_per_conn", "master_kb_per_conn"),
            ("workers KB/conn", "workers_kb_per_conn", "servers_kb_per_conn"),
            ("total KB/conn", "total_kb_per_conn", "total_kb_per_conn"),
            ("failed connections", "failures", "failures"))
    for metric, key, direct_key in rows:
        section.rows.append(Row(metric, key, cluster_label, "standalone", direct_key))
    section.notes.append(
        f"{lab.settings.idle_connections} idle websockets; RSS growth / open connections, "
        f"sampled {lab.settings.settle_s:g}s after opening; direct has no master")
    return section
