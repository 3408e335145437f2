"""Health monitoring and restarts against a live cluster."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio

from tests.clients import disconnect
from tests.cluster import Cluster, start_cluster
from tests.eio import connect_and_upgrade, ws_call


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


async def _open(url: str, n: int) -> tuple[aiohttp.ClientSession, list[tuple[Any, int]]]:
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    gate = asyncio.Semaphore(100)

    async def one() -> tuple[Any, int]:
        async with gate:
            _sid, ws = await connect_and_upgrade(http, url)
            return ws, (await ws_call(ws, "whoami"))["pid"]

    return http, list(await asyncio.gather(*(one() for _ in range(n))))


def test_kill9_worker_with_300_clients(tmp_path: Path) -> None:
    with start_cluster(workers=2, tmp_path=tmp_path) as cluster:

        async def main() -> None:
            http, sockets = await _open(cluster.url, 300)
            pids = {pid for _, pid in sockets}
            assert len(pids) == 2
            victim = min(pids)
            os.kill(victim, signal.SIGKILL)
            started = time.monotonic()
            while True:
                ready = [w for w in cluster.ready_workers() if w["pid"] not in pids]
                if ready:
                    break
                await asyncio.sleep(0.02)
            assert time.monotonic() - started < 1.5, "replaced within a second (plus boot)"
            await asyncio.sleep(0.5)
            survivors = [ws for ws, pid in sockets if pid != victim]
            killed = [ws for ws, pid in sockets if pid == victim]
            for i, ws in enumerate(survivors):
                assert not ws.closed
                assert (await ws_call(ws, "whoami", ack_id=100 + i))["pid"] != victim
            for ws in killed:
                msg = await ws.receive(timeout=5)
                assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                                    aiohttp.WSMsgType.ERROR)
            # The killed worker's clients reconnect, as a client library would.
            _, again = await _open(cluster.url, len(killed))
            assert all(pid != victim for _, pid in again)
            for ws, _ in sockets + again:
                await ws.close()
            await http.close()

        asyncio.run(main())
        log = cluster.log()
        assert "probably OOM" in log and "restarting in 0.1s" in log


def test_sigstop_is_caught_by_the_heartbeat(tmp_path: Path) -> None:
    env = {"SIOCLUSTER_HEALTH_HEARTBEAT_TIMEOUT_S": "1.5", "SIOCLUSTER_HEALTH_KILL_GRACE_S": "0.5",
           "SIOCLUSTER_HEALTH_HEARTBEAT_INTERVAL_S": "0.2"}
    with start_cluster(workers=2, tmp_path=tmp_path, env=env) as cluster:
        victim = cluster.ready_workers()[0]
        os.kill(victim["pid"], signal.SIGSTOP)
        _wait(lambda: [w for w in cluster.ready_workers()
                       if w["slot"] == victim["slot"] and w["pid"] != victim["pid"]],
              10, "the hung worker to be replaced")
        assert "no heartbeat" in cluster.log()
        _code, metrics = cluster.admin("/metrics")
        assert 'siocluster_worker_restarts_total{cause="heartbeat_timeout"} 1.0' in metrics


def test_blocked_event_loop_is_caught(tmp_path: Path) -> None:
    env = {"SIOCLUSTER_HEALTH_HEARTBEAT_TIMEOUT_S": "1.5", "SIOCLUSTER_HEALTH_KILL_GRACE_S": "0.5",
           "SIOCLUSTER_HEALTH_HEARTBEAT_INTERVAL_S": "0.2"}
    with start_cluster("health_app:app", workers=1, tmp_path=tmp_path, env=env) as cluster:
        old = cluster.ready_workers()[0]["pid"]

        async def main() -> None:
            client = socketio.AsyncClient(reconnection=False)
            await client.connect(cluster.url, transports=["websocket"])
            await client.emit("block", 30)
            await asyncio.sleep(0.2)
            await disconnect(client)

        asyncio.run(main())
        _wait(lambda: [w for w in cluster.ready_workers() if w["pid"] != old], 10,
              "the blocked worker to be replaced")


def test_rss_limit_recycles_gracefully(tmp_path: Path) -> None:
    config = "[health]\nmax_rss_mb = 120\n"
    with start_cluster("health_app:app", workers=1, tmp_path=tmp_path, config=config) as cluster:
        old = cluster.ready_workers()[0]["pid"]

        async def main() -> None:
            client = socketio.AsyncClient(reconnection=False)
            await client.connect(cluster.url, transports=["websocket"])
            await client.call("hog", 150, timeout=10)
            await disconnect(client)

        asyncio.run(main())
        _wait(lambda: [w for w in cluster.ready_workers() if w["pid"] != old], 15,
              "the bloated worker to be recycled")
        assert "over max_rss_mb=120" in cluster.log()
        status = cluster.status()
        assert status["restarts_by_cause"].get("rss_limit") == 1


def test_crash_loop_backs_off_then_fails_and_master_stays(tmp_path: Path) -> None:
    config = ("[health]\nbackoff_initial_s = 0.05\nflap_max_restarts = 2\n"
              "fail_max_restarts = 4\n")
    env = {"HEALTH_APP_CRASH_AFTER_S": "0.3"}
    with start_cluster("health_app:app", workers=1, tmp_path=tmp_path, config=config,
                       env=env, wait=False) as cluster:
        seen: set[str] = set()

        def failed() -> bool:
            try:
                workers = cluster.status()["workers"]
            except OSError:
                return False
            seen.update(w["state"] for w in workers)
            return bool(workers) and workers[0]["state"] == "failed"

        _wait(failed, 20, "the slot to fail")
        assert "backoff" in seen
        code, health = cluster.admin("/health")
        assert code == 503 and "failed" in " ".join(health["reasons"])
        assert cluster.proc.poll() is None, "the master is still up"
        assert "exited with code 7" in cluster.log()


def test_sighup_rolls_every_worker_without_failed_handshakes(tmp_path: Path) -> None:
    with start_cluster(workers=2, tmp_path=tmp_path) as cluster:
        before = cluster.worker_pids()

        async def main() -> tuple[int, int]:
            ok = failed = 0
            async with aiohttp.ClientSession() as http:
                deadline = time.monotonic() + 30
                rolled = False
                cluster.proc.send_signal(signal.SIGHUP)
                while time.monotonic() < deadline:
                    try:
                        async with http.get(cluster.url + "/socket.io/?EIO=4&transport=polling",
                                            timeout=aiohttp.ClientTimeout(total=5)) as resp:
                            body = await resp.text()
                            if resp.status == 200 and body.startswith("0{"):
                                ok += 1
                            else:
                                failed += 1
                    except aiohttp.ClientError:
                        failed += 1
                    if not rolled:
                        pids = {w["pid"] for w in cluster.ready_workers()}
                        status = cluster.status()["workers"]
                        rolled = (len(pids) == 2 and not pids & before
                                  and all(w["state"] == "ready" for w in status))
                    else:
                        break
                    await asyncio.sleep(0.01)
            return ok, failed

        ok, failed = asyncio.run(main())
        assert failed == 0
        assert ok > 10
        after = cluster.worker_pids()
        assert len(after) == 2 and not after & before


def _scale(cluster: Cluster, n: int) -> None:
    code, body = cluster.admin("/scale", "POST", {"workers": n})
    assert code == 202, body


def test_scale_up_and_down_keeps_other_sessions(tmp_path: Path) -> None:
    with start_cluster(workers=2, tmp_path=tmp_path) as cluster:

        async def main() -> None:
            http, sockets = await _open(cluster.url, 20)
            _scale(cluster, 3)
            cluster.wait_ready(3)
            cluster.proc.send_signal(signal.SIGTTOU)  # 3 -> 2
            _wait(lambda: len(cluster.status()["workers"]) == 2, 15, "scale down to 2")
            _scale(cluster, 1)
            _wait(lambda: len(cluster.status()["workers"]) == 1, 15, "scale down to 1")
            remaining = cluster.ready_workers()[0]["pid"]
            for i, (ws, pid) in enumerate(sockets):
                if pid == remaining:
                    assert not ws.closed
                    assert (await ws_call(ws, "whoami", ack_id=500 + i))["pid"] == remaining
            for ws, _ in sockets:
                await ws.close()
            await http.close()

        asyncio.run(main())
        assert cluster.admin("/scale", "POST", {"workers": 0})[0] == 400


@pytest.mark.parametrize("command", ["reload", "stop"])
def test_admin_actions_need_the_token_off_loopback(tmp_path: Path, command: str) -> None:
    config = '[admin]\nhost = "0.0.0.0"\ntoken = "s3cret-token"\n'
    with start_cluster(workers=1, tmp_path=tmp_path, config=config, token="s3cret-token") as c:
        c.token = ""
        code, _ = c.admin("/status")
        assert code == 401
        assert c.admin(f"/{command}", "POST")[0] == 401
        assert c.admin("/health")[0] == 200
        c.token = "s3cret-token"
        code, status = c.admin("/status")
        assert code == 200 and "s3cret" not in str(status)
