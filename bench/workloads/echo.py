"""ws-echo and polling-echo: clients in a closed loop of emit-with-ack.

Every client sends ``echo`` with a small payload and an ack id, waits for the
ack, and starts again, for ``duration_s``.  Figures: acks per second over all
clients, and the p50/p99 of the round trip.  The same clients run against the
cluster (one URL) and against N standalone servers (client i on server
i mod N), so the ratio shows what the balancer costs.

``polling-echo`` clients share one keep-alive pool (aiohttp's, which reuses
the connection released last), so a connection carries the requests of
several sessions.  ``polling-echo-own`` gives each client its own pool, as a
browser tab or a python-socketio client has: each connection carries one
session.  ``polling-echo-mixed`` sends each request on the next of
:data:`MIXED_POOL` connections in turn, whichever client sends it (nginx's
upstream keep-alive in front of many browsers, at its worst): every
connection carries every session's requests, interleaved.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, cast

import aiohttp

from ..clients import PollingClient, WsClient
from ..lab import Lab
from ..loadgen import ShardContext
from ..model import Row, Run, Section
from ..stats import Histogram
from ..targets import Target
from .common import RoundRobinHttp, close_all, describe, http_session, open_many

__all__ = ["polling_echo", "polling_echo_mixed", "polling_echo_own", "ws_echo"]

CALL_TIMEOUT_S = 10.0
MIXED_POOL = 8  # polling-echo-mixed: connections in all (over the generator processes)


@dataclass(frozen=True)
class EchoParams:
    transport: str  # "websocket" or "polling"
    urls: list[str]
    first: int
    clients: int
    duration_s: float
    concurrency: int
    payload: str
    own_pool: bool = False  # each client its own keep-alive connections
    pool_limit: int = 0  # the shared pool's cap (0: none)


async def echo_shard(ctx: ShardContext, params: EchoParams) -> dict[str, Any]:
    pool = RoundRobinHttp(params.pool_limit) if params.pool_limit else None
    async with pool or http_session() as http:
        if params.transport == "websocket":
            async def factory(i: int) -> Any:
                return await WsClient.connect(http, params.urls[i % len(params.urls)])
        elif params.own_pool:
            async def factory(i: int) -> Any:
                own = http_session()
                try:
                    return await PollingClient.connect(own, params.urls[i % len(params.urls)],
                                                       owns_http=True)
                except BaseException:
                    await own.close()
                    raise
        else:
            async def factory(i: int) -> Any:
                return await PollingClient.connect(cast(aiohttp.ClientSession, http),
                                                   params.urls[i % len(params.urls)])

        indices = range(params.first, params.first + params.clients)
        clients, connect_failures = await open_many(factory, indices, params.concurrency)
        hist = Histogram()
        errors: Counter[str] = Counter()

        async def loop(client: Any, deadline: float) -> None:
            while time.monotonic() < deadline:
                sent = time.monotonic()
                try:
                    async with asyncio.timeout(CALL_TIMEOUT_S):
                        await client.call("echo", params.payload)
                except Exception as exc:
                    errors[describe(exc)] += 1
                    return
                hist.record(time.monotonic() - sent)

        await ctx.started()
        started = time.monotonic()
        await asyncio.gather(*(loop(c, started + params.duration_s) for c in clients))
        elapsed = time.monotonic() - started
        await ctx.stopped()
        await close_all(clients)
    return {"hist": hist, "elapsed_s": elapsed, "clients": len(clients),
            "connect_failures": dict(connect_failures), "errors": dict(errors)}


def _measure(lab: Lab, target: Target, transport: str, clients: int, own_pool: bool,
             pool_limit: int) -> Run:
    s = lab.settings
    params = [EchoParams(transport, target.urls, first, count, s.duration_s,
                         s.connect_concurrency, "x" * s.payload_bytes, own_pool,
                         max(1, pool_limit // s.shards) if pool_limit else 0)
              for first, count in lab.split(clients)]
    results, window = lab.measure(target, echo_shard, params, setup_timeout_s=60.0,
                                  run_timeout_s=s.duration_s + CALL_TIMEOUT_S + 30.0)
    hist = Histogram.merged(r["hist"] for r in results)
    rate = sum(r["hist"].total / r["elapsed_s"] for r in results if r["elapsed_s"] > 0)
    connect_failures: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for r in results:
        connect_failures.update(r["connect_failures"])
        errors.update(r["errors"])
    lat = hist.to_json()
    return Run(target.label,
               metrics={"acks_per_s": rate, "p50_ms": lat["p50_ms"], "p99_ms": lat["p99_ms"],
                        "errors": float(sum(errors.values()) + sum(connect_failures.values()))},
               window=window.to_json(),
               details={"balancer": target.balancer_stats(),
                        "latency": lat, "clients": sum(r["clients"] for r in results),
                        "connect_failures": dict(connect_failures), "errors": dict(errors)})


def _section(lab: Lab, name: str, transport: str, clients: int,
             own_pool: bool = False, pool_limit: int = 0) -> Section:
    section = Section(name)
    section.runs = lab.compare([lab.cluster, lab.standalone, *lab.peers()],
                               lambda target: _measure(lab, target, transport, clients,
                                                       own_pool, pool_limit))
    cluster_label = section.runs[0].target
    for metric, key in (("acks/s", "acks_per_s"), ("p50 ms", "p50_ms"), ("p99 ms", "p99_ms"),
                        ("errors", "errors")):
        section.rows.append(Row(metric, key, cluster_label, "standalone",
                                per_op="ack" if key == "acks_per_s" else ""))
    pool = ("each with its own keep-alive connections" if own_pool else
            f"every request on the next of {pool_limit} connections in turn" if pool_limit else
            "sharing one keep-alive pool") if transport == "polling" else ""
    section.notes.append(f"{clients} {transport} clients{', ' + pool if pool else ''}, "
                         f"emit-with-ack in a closed loop, "
                         f"{lab.settings.duration_s:g}s x {lab.settings.rounds} rounds")
    return section


def ws_echo(lab: Lab) -> Section:
    return _section(lab, "ws-echo", "websocket", lab.settings.ws_clients)


def polling_echo(lab: Lab) -> Section:
    return _section(lab, "polling-echo", "polling", lab.settings.polling_clients)


def polling_echo_own(lab: Lab) -> Section:
    return _section(lab, "polling-echo-own", "polling", lab.settings.polling_clients,
                    own_pool=True)


def polling_echo_mixed(lab: Lab) -> Section:
    return _section(lab, "polling-echo-mixed", "polling", lab.settings.polling_clients,
                    pool_limit=MIXED_POOL)
