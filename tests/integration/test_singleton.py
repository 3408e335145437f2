"""@singleton on a real cluster: one ticker at a time, failover, fencing, rolling restart.

tests/apps/singleton_app.py ticks every 0.2 s with its pid.  Real
python-socketio clients record the ticks they receive; the app also appends
each tick it emitted to a log file (after the emit passed the lease fence), so
the timing checks do not depend on which clients happened to be connected
while workers were replaced.  The lease is 1 s here.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import socketio

from tests.clients import disconnect
from tests.cluster import Cluster, run_cli, start_cluster
from tests.redis_server import RedisServer, redis_server_fixture

LEASE_S = 1.0
HEARTBEAT_S = 1.0
PERIOD_S = 0.2
APP = "singleton_app:app"

redis_server = redis_server_fixture(scope="module")


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "SIOCLUSTER_CLUSTER_SINGLETON_LEASE_S": str(LEASE_S),
        "SIOCLUSTER_HEALTH_HEARTBEAT_INTERVAL_S": str(HEARTBEAT_S),
        "SINGLETON_TICK_S": str(PERIOD_S),
        "SINGLETON_TICK_LOG": str(tmp_path / "ticks.log"),
        **extra,
    }


def emitted(tmp_path: Path) -> list[tuple[int, int, float]]:
    """(pid, n, wall time) of every tick the app emitted, in time order."""
    path = tmp_path / "ticks.log"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        pid, n, t = line.split()
        rows.append((int(pid), int(n), float(t)))
    return sorted(rows, key=lambda r: r[2])


def assert_one_ticker_at_a_time(rows: list[tuple[int, int, float]]) -> None:
    """Each pid ticked during one interval of time, and no two intervals overlap."""
    spans: dict[int, list[float]] = {}
    for pid, _n, t in rows:
        span = spans.setdefault(pid, [t, t])
        span[1] = t
    ordered = sorted(spans.items(), key=lambda kv: kv[1][0])
    for (pid_a, (_, end_a)), (pid_b, (start_b, _)) in itertools.pairwise(ordered):
        assert start_b > end_a, f"pid {pid_b} ticked from {start_b} while {pid_a} ran to {end_a}"
    # Within a run, no second ticker: the counter of each pid only grows by one.
    last: dict[int, int] = {}
    for pid, n, _t in sorted(rows, key=lambda r: (r[0], r[2])):
        if pid in last:
            assert n == last[pid] + 1, f"pid {pid}: tick {last[pid]} then {n}"
        last[pid] = n


def max_gap(rows: list[tuple[int, int, float]]) -> float:
    times = [t for _pid, _n, t in rows]
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


class Clients:
    """Real clients recording the ticks they receive (monotonic receive time, pid, n)."""

    def __init__(self) -> None:
        self.clients: list[socketio.AsyncClient] = []
        self.ticks: list[list[tuple[float, int, int]]] = []
        self.worker_pids: list[int] = []

    async def open(self, url: str, n: int) -> None:
        for _ in range(n):
            client = socketio.AsyncClient(reconnection_delay=0.1, reconnection_delay_max=0.5)
            got: list[tuple[float, int, int]] = []

            def on_tick(tick: dict[str, Any], got: list[tuple[float, int, int]] = got) -> None:
                got.append((time.monotonic(), tick["pid"], tick["n"]))

            client.on("tick", on_tick)
            await client.connect(url, transports=["websocket"], wait_timeout=10)
            self.worker_pids.append((await client.call("whoami", timeout=5))["pid"])
            self.clients.append(client)
            self.ticks.append(got)

    def pids_since(self, since: float) -> list[int]:
        """Pids of the ticks any client received after ``since``, in order of arrival."""
        merged = sorted((t, pid) for got in self.ticks for t, pid, _n in got if t >= since)
        return [pid for _t, pid in merged]

    async def close(self) -> None:
        for client in self.clients:
            await disconnect(client)


async def _until(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def _holder(rows: list[tuple[int, int, float]]) -> int:
    return rows[-1][0]


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    extra = getattr(request, "param", {})
    with start_cluster(APP, workers=3, tmp_path=tmp_path, env=_env(tmp_path, **extra)) as c:
        yield c


def test_one_ticker_at_the_right_rate(cluster: Cluster, tmp_path: Path) -> None:
    async def main() -> None:
        clients = Clients()
        await clients.open(cluster.url, 6)
        assert len(set(clients.worker_pids)) > 1, "clients spread over several workers"
        await _until(lambda: emitted(tmp_path), 10, "the first tick")
        start = time.monotonic()
        await asyncio.sleep(3.0)
        rows = emitted(tmp_path)
        for got in clients.ticks:
            recent = [(pid, n) for t, pid, n in got if t >= start]
            assert len({pid for pid, _n in recent}) == 1, recent
            # 3 s at 0.2 s: 15 ticks, with room for a busy shared machine.
            assert 11 <= len(recent) <= 16, len(recent)
            assert len(recent) == len(set(recent)), "no tick twice"
        await clients.close()
        assert len({pid for pid, _n, _t in rows}) == 1, "one worker ticked all along"
        assert_one_ticker_at_a_time(rows)

    asyncio.run(main())
    status = cluster.status()
    [single] = status["singletons"]
    holder = emitted(tmp_path)[-1][0]
    assert single["name"] == "ticker" and single["holder"]["pid"] == holder
    assert single["holder"]["slot"] in (0, 1, 2) and single["held_for_s"] >= 2.0
    assert single["handovers"] == 0
    shown = run_cli("status", "--admin-port", str(cluster.admin_port))
    assert shown.returncode == 0, shown.stderr
    assert "singleton ticker: " in shown.stdout and f"pid {holder}, held " in shown.stdout


def test_kill9_holder_resumes_elsewhere_within_lease_plus_heartbeat(
    cluster: Cluster, tmp_path: Path
) -> None:
    async def main() -> None:
        clients = Clients()
        await clients.open(cluster.url, 6)
        await _until(lambda: len(emitted(tmp_path)) >= 5, 10, "ticks")
        victim = _holder(emitted(tmp_path))
        os.kill(victim, signal.SIGKILL)
        killed = time.time()
        await _until(lambda: [r for r in emitted(tmp_path) if r[0] != victim], 10,
                     "a new ticker")
        await asyncio.sleep(1.0)
        rows = emitted(tmp_path)
        first_new = next(t for pid, _n, t in rows if pid != victim)
        took = first_new - killed
        print(f"kill -9: ticks resumed after {took:.2f}s")
        assert took < LEASE_S + HEARTBEAT_S, took
        assert all(t < killed for pid, _n, t in rows if pid == victim)
        assert_one_ticker_at_a_time(rows)
        seen = clients.pids_since(time.monotonic() - 0.8)
        assert seen and victim not in seen and len(set(seen)) == 1
        await clients.close()

    asyncio.run(main())
    _code, metrics = cluster.admin("/metrics")
    assert 'siocluster_singleton_handovers_total{name="ticker"} 1.0' in metrics
    assert "holder worker" in cluster.log() and "exited; lease free" in cluster.log()


@pytest.mark.parametrize(
    "cluster", [{"SIOCLUSTER_HEALTH_HEARTBEAT_TIMEOUT_S": "30"}], indirect=True
)
def test_sigstopped_holder_never_ticks_again_after_sigcont(
    cluster: Cluster, tmp_path: Path
) -> None:
    async def main() -> None:
        clients = Clients()
        await clients.open(cluster.url, 6)
        await _until(lambda: len(emitted(tmp_path)) >= 5, 10, "ticks")
        victim = _holder(emitted(tmp_path))
        os.kill(victim, signal.SIGSTOP)
        stopped = time.time()
        try:
            await _until(lambda: [r for r in emitted(tmp_path) if r[0] != victim], 10,
                         "a new ticker while the holder is stopped")
            took = next(t for pid, _n, t in emitted(tmp_path) if pid != victim) - stopped
            print(f"SIGSTOP: ticks resumed after {took:.2f}s")
            assert took < LEASE_S + HEARTBEAT_S, took
            await asyncio.sleep(0.5)
        finally:
            os.kill(victim, signal.SIGCONT)
        resumed = time.monotonic()
        await asyncio.sleep(2.0)
        rows = emitted(tmp_path)
        assert all(t < stopped + 0.05 for pid, _n, t in rows if pid == victim), \
            "the paused holder emitted after it resumed"
        # A tick queued (not emitted) just before the stop may still leave on resume.
        assert victim not in clients.pids_since(resumed + 0.2)
        assert_one_ticker_at_a_time(rows)
        assert victim in cluster.worker_pids(), "it was fenced, not killed"
        await clients.close()

    asyncio.run(main())
    assert "lease lost; cancelling" in cluster.log() or "lost its lease" in cluster.log()


@pytest.mark.parametrize(
    "cluster", [{"SIOCLUSTER_HEALTH_HEARTBEAT_TIMEOUT_S": "30"}], indirect=True
)
def test_hung_holder_is_replaced_and_fenced_when_its_loop_returns(
    cluster: Cluster, tmp_path: Path
) -> None:
    async def main() -> None:
        clients = Clients()
        await clients.open(cluster.url, 6)
        await _until(lambda: len(emitted(tmp_path)) >= 5, 10, "ticks")
        victim = _holder(emitted(tmp_path))
        on_victim = [c for c, pid in zip(clients.clients, clients.worker_pids, strict=True)
                     if pid == victim]
        assert on_victim, "a client on the holder's worker"
        await on_victim[0].emit("block", 3.0)  # its loop blocks for 3 s
        blocked = time.time()
        await _until(lambda: [r for r in emitted(tmp_path) if r[0] != victim], 10,
                     "a new ticker while the holder hangs")
        took = next(t for pid, _n, t in emitted(tmp_path) if pid != victim) - blocked
        print(f"hung loop: ticks resumed after {took:.2f}s")
        assert took < LEASE_S + HEARTBEAT_S, took
        await asyncio.sleep(max(0.0, blocked + 3.0 - time.time()) + 1.5)
        rows = emitted(tmp_path)
        assert all(t < blocked + 0.05 for pid, _n, t in rows if pid == victim)
        assert_one_ticker_at_a_time(rows)
        await clients.close()

    asyncio.run(main())


def test_rolling_restart_hands_over_without_gap_or_overlap(
    cluster: Cluster, tmp_path: Path
) -> None:
    async def main() -> None:
        clients = Clients()
        await clients.open(cluster.url, 6)
        await _until(lambda: len(emitted(tmp_path)) >= 5, 10, "ticks")
        old = cluster.worker_pids()
        cluster.proc.send_signal(signal.SIGHUP)
        rolled = time.time()

        def rolled_over() -> bool:
            fresh = [w for w in cluster.ready_workers() if w["pid"] not in old]
            return len(fresh) >= 3 and not (cluster.worker_pids() & old)

        await _until(rolled_over, 60, "the roll to finish")
        await asyncio.sleep(1.0)
        rows = emitted(tmp_path)
        during = [r for r in rows if r[2] >= rolled - 1.0]
        gap = max_gap(during)
        print(f"SIGHUP roll: {len({r[0] for r in during})} tickers, longest gap {gap:.2f}s")
        assert gap <= LEASE_S, gap
        assert_one_ticker_at_a_time(rows)
        # One handover: a worker about to be replaced does not take the lease.
        assert len({r[0] for r in during}) == 2, during
        assert rows[-1][0] not in old, "a new-generation worker ticks at the end"
        await clients.close()

    asyncio.run(main())
    assert "released the lease" in cluster.log()


def two_hosts_one_holder(
    tmp_path: Path, env: dict[str, str], *, what: str, replaced_within: float | None = None
) -> tuple[list[dict[str, Any]], str]:
    """Two hosts (two clusters) on one broker: one ticker across both; kill -9 of
    the holder (ticks resume within the lease plus a heartbeat); SIGSTOP of the
    next one (replaced, within ``replaced_within`` if given, and it never ticks
    after SIGCONT).  Returns each host's /status singleton entry, once the
    masters heard a heartbeat since, and both logs."""
    host_a, host_b = tmp_path / "a", tmp_path / "b"
    host_a.mkdir()
    host_b.mkdir()
    with start_cluster(APP, workers=2, tmp_path=host_a, env=env) as a, \
            start_cluster(APP, workers=2, tmp_path=host_b, env=env) as b:

        async def main() -> None:
            clients_a, clients_b = Clients(), Clients()
            await clients_a.open(a.url, 3)
            await clients_b.open(b.url, 3)
            await _until(lambda: len(emitted(tmp_path)) >= 5, 15, "ticks")
            start = time.monotonic()
            await asyncio.sleep(2.0)
            rows = emitted(tmp_path)
            assert len({pid for pid, _n, _t in rows}) == 1, "one holder across both hosts"
            for got in clients_a.ticks + clients_b.ticks:
                recent = {pid for t, pid, _n in got if t >= start}
                assert len(recent) == 1, recent
            # Failover across hosts: a worker of either host takes it.
            victim = _holder(rows)
            os.kill(victim, signal.SIGKILL)
            killed = time.time()
            await _until(lambda: [r for r in emitted(tmp_path) if r[0] != victim], 10,
                         "a new ticker")
            took = next(t for pid, _n, t in emitted(tmp_path) if pid != victim) - killed
            print(f"{what} kill -9: ticks resumed after {took:.2f}s")
            assert took < LEASE_S + HEARTBEAT_S, took
            await asyncio.sleep(1.0)
            # Fencing against the broker's clock: a paused holder never ticks after SIGCONT.
            paused = _holder(emitted(tmp_path))
            os.kill(paused, signal.SIGSTOP)
            stopped = time.time()
            try:
                await _until(lambda: [r for r in emitted(tmp_path)
                                      if r[0] not in (victim, paused)], 15, "a third ticker")
                took = next(t for pid, _n, t in emitted(tmp_path)
                            if pid not in (victim, paused)) - stopped
                print(f"{what} SIGSTOP: ticks resumed after {took:.2f}s")
                if replaced_within is not None:
                    assert took < replaced_within, took
            finally:
                os.kill(paused, signal.SIGCONT)
            await asyncio.sleep(1.5)
            rows = emitted(tmp_path)
            assert all(t < stopped + 0.05 for pid, _n, t in rows if pid == paused), \
                "the paused holder emitted after it resumed"
            assert_one_ticker_at_a_time(rows)
            await clients_a.close()
            await clients_b.close()

        asyncio.run(main())
        holder = emitted(tmp_path)[-1][0]
        time.sleep(HEARTBEAT_S * 2.5)  # both masters heard a heartbeat since
        singles = []
        for cluster in (a, b):
            [single] = cluster.status()["singletons"]
            assert single["holder"]["pid"] == holder, (cluster.port, single)
            assert single["handovers"] >= 1
            singles.append(single)
        return singles, a.log() + b.log()


def test_redis_two_hosts_one_holder(redis_server: RedisServer, tmp_path: Path) -> None:
    env = {**_env(tmp_path), "SIOCLUSTER_ADAPTER_BACKEND": "redis",
           "SIOCLUSTER_ADAPTER_REDIS_URL": redis_server.url,
           "SIOCLUSTER_HEALTH_HEARTBEAT_TIMEOUT_S": "30"}
    two_hosts_one_holder(tmp_path, env, what="redis")


def test_redis_outage_leaves_no_holder_until_redis_returns(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Without Redis nobody can confirm a lease: the ticker stops within the lease, then resumes."""
    env = {**_env(tmp_path), "SIOCLUSTER_ADAPTER_BACKEND": "redis",
           "SIOCLUSTER_ADAPTER_REDIS_URL": redis_server.url}
    with start_cluster(APP, workers=2, tmp_path=tmp_path, env=env) as cluster:
        deadline = time.monotonic() + 15
        while len(emitted(tmp_path)) < 3:
            assert time.monotonic() < deadline, cluster.log()
            time.sleep(0.05)
        redis_server.kill()
        killed = time.time()
        try:
            time.sleep(LEASE_S + 1.0)
            last = emitted(tmp_path)[-1][2]
            print(f"redis down: last tick {last - killed:.2f}s after the kill")
            assert last - killed < LEASE_S, "the holder stopped within its lease"
        finally:
            redis_server.start()
        restarted = time.time()
        deadline = time.monotonic() + 10
        while emitted(tmp_path)[-1][2] < restarted:
            assert time.monotonic() < deadline, cluster.log()
            time.sleep(0.05)
        print(f"redis back: ticking again after {emitted(tmp_path)[-1][2] - restarted:.2f}s")
        assert_one_ticker_at_a_time([r for r in emitted(tmp_path) if r[2] < killed])
        assert "lease backend did not answer" in cluster.log()
