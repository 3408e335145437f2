"""``python -m bench --peers``: the pure parts (round order, median and spread,
the HAProxy config, CPU per op) and the two peer systems really started,
spoken to with the bench's own clients, and stopped.

The live test starts Node's socket.io cluster (``bench/node``, 2 workers) and
HAProxy + 2 python-socketio servers + AsyncRedisManager, and runs through
each: a websocket session with an ack, and polling sessions that must stay
on their server across requests (HAProxy's cookie; @socket.io/sticky's sid
map).  Then it checks that every process the bench started is gone.  Under
``CI=true`` a missing node, npm or haproxy fails it (:func:`tests.system.missing`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from bench import peers
from bench.clients import PollingClient, SessionError, WsClient
from bench.model import Run, merge_rounds, round_order, spread
from bench.report import cpu_us_per_op
from bench.targets import Target
from bench.workloads.common import http_session
from tests.redis_server import RedisServer, redis_server_fixture
from tests.system import find_program, missing

redis_server = redis_server_fixture(scope="module")


def test_rounds_alternate_so_every_system_is_first_as_often_as_last() -> None:
    assert [round_order(4, r) for r in range(3)] == [[0, 1, 2, 3], [3, 2, 1, 0], [0, 1, 2, 3]]
    assert round_order(1, 1) == [0]


def test_merged_rounds_carry_the_median_summed_failures_and_the_spread() -> None:
    rounds = [Run("node", {"acks_per_s": v, "errors": e, "p99_ms": None})
              for v, e in ((10.0, 0.0), (30.0, 1.0), (20.0, 2.0))]
    merged = merge_rounds(rounds)
    assert merged.metrics["acks_per_s"] == 20.0
    assert merged.metrics["errors"] == 3.0
    assert merged.metrics["p99_ms"] is None
    assert merged.spread == {"acks_per_s": (10.0, 30.0), "errors": (0.0, 2.0)}
    assert spread([Run("x", {"a": 1.0})]) == {"a": (1.0, 1.0)}
    single = merge_rounds([Run("x", {"a": 5.0})])
    assert single.spread == {"a": (5.0, 5.0)}


def test_cpu_per_op_is_the_median_over_rounds() -> None:
    def one(rate: float, cpu: float) -> dict[str, Any]:
        return {"metrics": {"acks_per_s": rate}, "window": {"server_cpu_pct": cpu}}

    run = Run("x", {"acks_per_s": 2.0}, {"server_cpu_pct": 100.0},
              details={"rounds": [one(10_000, 50.0), one(10_000, 100.0), one(0, 10.0)]})
    # 100% of a core at 10,000 acks/s is 100 us per ack; a round with no rate is skipped
    assert cpu_us_per_op(run, "acks_per_s", "server_cpu_pct") == 75.0
    assert cpu_us_per_op(None, "acks_per_s", "server_cpu_pct") is None


def test_haproxy_config_is_sticky_by_cookie_and_fits_the_fd_limit() -> None:
    text = peers.haproxy_config(8000, ["http://127.0.0.1:9001", "http://127.0.0.1:9002"], 20_000)
    assert "bind 127.0.0.1:8000" in text
    assert "cookie SRV insert indirect nocache" in text
    assert "server s0 127.0.0.1:9001 cookie s0" in text
    assert "server s1 127.0.0.1:9002 cookie s1" in text
    assert "maxconn 9900" in text and "mode http" in text


async def _connect(http: aiohttp.ClientSession, url: str, tries: int) -> PollingClient:
    """A polling session; ``tries`` > 1 for Node's cluster, whose primary learns a
    new sid's worker by IPC after the handshake's answer has left, so the request
    right after a handshake can reach the wrong worker and get "Session ID unknown"
    (a known race of @socket.io/sticky, counted by the bench as a failed session;
    README, "Against the peers").  Only the handshake is retried."""
    for attempt in range(tries):
        try:
            return await PollingClient.connect(http, url)
        except SessionError:
            if attempt == tries - 1:
                raise
    raise AssertionError("unreachable")


async def _drive(url: str, *, handshake_tries: int = 1) -> None:
    async with http_session() as http:
        ws = await WsClient.connect(http, url)
        assert await ws.call("echo", "héllo ✓") == ["héllo ✓"]
        await ws.close()
        # New sessions spread over both servers, so a session that lost its
        # server would see "Session ID unknown" within a few requests.
        clients = [await _connect(http, url, handshake_tries) for _ in range(4)]
        for i in range(3):
            for client in clients:
                assert await client.call("echo", i) == [i]
        for client in clients:
            await client.close()


def _gone(target: Target) -> list[int]:
    pids = [pid for role in target.pids.values() for pid in role]
    assert pids
    return [pid for pid in pids if psutil.pid_exists(pid)
            and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]


def test_node_cluster_starts_serves_and_stops(tmp_path: Path) -> None:
    for name, package in (("node", "nodejs"), ("npm", "npm")):
        if find_program(name, package) is None:
            missing(f"{name} is not installed and cannot be installed")
    with peers.node_cluster(2, log_dir=tmp_path) as target:
        assert len(target.pids["workers"]) == 2
        asyncio.run(_drive(target.urls[0], handshake_tries=3))
    assert _gone(target) == []


def test_haproxy_stack_starts_serves_and_stops(tmp_path: Path,
                                               redis_server: RedisServer) -> None:
    if find_program("haproxy", "haproxy") is None:
        missing("haproxy is not installed and cannot be installed")
    with peers.haproxy_stack(2, log_dir=tmp_path, redis_url=redis_server.url) as target:
        assert len(target.pids["servers"]) == 2
        asyncio.run(_drive(target.urls[0]))
    assert _gone(target) == []


@pytest.mark.parametrize("app", ["bench_asgi"])
def test_haproxy_stack_serves_the_asgi_app(tmp_path: Path, redis_server: RedisServer,
                                           app: str) -> None:
    if find_program("haproxy", "haproxy") is None:
        missing("haproxy is not installed and cannot be installed")
    with peers.haproxy_stack(2, log_dir=tmp_path, redis_url=redis_server.url,
                             app=app) as target:
        asyncio.run(_drive(target.urls[0]))
    assert _gone(target) == []
