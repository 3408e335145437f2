"""Several hosts, one cluster: registry, forwarding, and a plain round-robin balancer in front.

Each "host" is a separate siocluster process (its own master, workers and
ports) on this machine, sharing one real redis-server; HAProxy in front does
round-robin over TCP with no stickiness of any kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio

from balancer.peerauth import sign_forward
from tests.clients import disconnect
from tests.cluster import Cluster, pid_alive, run_cli, start_cluster
from tests.eio import EIO_PATH, handshake, poll, post, ws_call
from tests.haproxy import haproxy_round_robin
from tests.integration.test_js_client import (
    JS,
    NODE_TIMEOUT_S,
    node_client,
    npm_install,
    read_line,
)
from tests.integration.test_recovery import WINDOW_S, check_everyone_recovered, node, read_json
from tests.integration.test_storm import SESSIONS, storm
from tests.redis_server import RedisServer, redis_server_fixture
from tests.waiting import eventually

redis_server = redis_server_fixture(scope="module")
__all__ = ["node_client"]  # a fixture, imported for its use here

TOKEN = "a-peer-token-of-at-least-32-characters"


def host_env(redis: RedisServer, host_id: str, channel: str) -> dict[str, str]:
    return {
        "SIOCLUSTER_ADAPTER_BACKEND": "redis",
        "SIOCLUSTER_ADAPTER_REDIS_URL": redis.url,
        "SIOCLUSTER_ADAPTER_CHANNEL": channel,
        "SIOCLUSTER_CLUSTER_ADVERTISE": "127.0.0.1:0",
        "SIOCLUSTER_CLUSTER_HOST_ID": host_id,
        "SIOCLUSTER_CLUSTER_PEER_TOKEN": TOKEN,
        "SIOCLUSTER_CLUSTER_HOST_LEASE_S": "3",
        "SIOCLUSTER_CLUSTER_GRACEFUL_TIMEOUT_S": "3",
    }


@contextlib.contextmanager
def hosts(redis: RedisServer, tmp_path: Path, ids: tuple[str, ...], channel: str,
          app: str = "echo_app:app", extra: dict[str, str] | None = None,
          workers: int = 1) -> Iterator[list[Cluster]]:
    with contextlib.ExitStack() as stack:
        clusters = []
        for host_id in ids:
            workdir = tmp_path / host_id
            workdir.mkdir()
            env = {**host_env(redis, host_id, channel), **(extra or {})}
            clusters.append(stack.enter_context(start_cluster(
                app, workers=workers, tmp_path=workdir, env=env)))
        for c in clusters:
            eventually(lambda c=c: len(c.status()["hosts"]) == len(ids), timeout_s=10,
                       what="every host listed")
        yield clusters


async def sids(*urls: str) -> list[str]:
    async with aiohttp.ClientSession() as http:
        return [(await handshake(http, url))["sid"] for url in urls]


def test_hosts_register_list_and_leave(redis_server: RedisServer, tmp_path: Path) -> None:
    with hosts(redis_server, tmp_path, ("ha", "hb"), "reg") as (a, b):
        rows = {h["id"]: h for h in a.status()["hosts"]}
        assert rows["ha"]["self"] and not rows["hb"]["self"]
        assert rows["hb"]["address"] == f"127.0.0.1:{b.port}"
        eventually(lambda: [h["workers"] for h in a.status()["hosts"]] == [1, 1],
                   timeout_s=5, what="worker counts renewed")
        shown = run_cli("status", "--admin-port", str(a.admin_port))
        assert f"host hb at 127.0.0.1:{b.port}" in shown.stdout, shown.stdout
        # sids name their host
        sid_a, sid_b = asyncio.run(sids(a.url, b.url))
        assert sid_a.startswith("ha-") and sid_b.startswith("hb-"), (sid_a, sid_b)
        assert TOKEN not in a.log() and TOKEN not in str(a.status())
        # a clean stop leaves at once
        b.stop()
        eventually(lambda: [h["id"] for h in a.status()["hosts"]] == ["ha"], timeout_s=3,
                   what="hb gone from ha's listing")
        assert "host hb left the cluster" in a.log()


def test_a_killed_host_drops_out_when_its_lease_expires(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    with hosts(redis_server, tmp_path, ("ka", "kb"), "kill") as (a, b):
        workers = b.worker_pids()
        os.killpg(b.proc.pid, signal.SIGKILL)
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        eventually(lambda: [h["id"] for h in a.status()["hosts"]] == ["ka"], timeout_s=8,
                   what="kb gone from ka's listing")
        assert time.monotonic() - killed < 3 + 1.5


def test_a_host_id_clash_is_refused(redis_server: RedisServer, tmp_path: Path) -> None:
    with hosts(redis_server, tmp_path, ("ca",), "clash") as (a,):
        env = host_env(redis_server, "ca", "clash")
        shown = run_cli("run", "echo_app:app", "--workers", "1", "--port", "0",
                        "--admin-port", "0", env=env, timeout=30)
        assert shown.returncode == 2, shown.stdout + shown.stderr
        out = shown.stdout + shown.stderr
        assert "cluster.host_id 'ca' is already registered by the live host at " \
            f"127.0.0.1:{a.port}" in out, out
        assert "Traceback" not in out
        assert [h["id"] for h in a.status()["hosts"]] == ["ca"]


def test_advertise_flag(redis_server: RedisServer) -> None:
    env = host_env(redis_server, "fl", "flag")
    del env["SIOCLUSTER_CLUSTER_ADVERTISE"]
    env["SIOCLUSTER_ADAPTER_BACKEND"] = "local"
    shown = run_cli("run", "echo_app:app", "--port", "0", "--admin-port", "0",
                    "--advertise", "127.0.0.1:0", env=env)
    assert shown.returncode == 2 and "cluster.advertise needs adapter.backend" in shown.stderr


@pytest.mark.parametrize("env,message", [
    ({"SIOCLUSTER_ADAPTER_BACKEND": "local"}, "cluster.advertise needs adapter.backend"),
    ({"SIOCLUSTER_CLUSTER_PEER_TOKEN": "short"}, "at least 32 characters"),
])
def test_multi_host_config_errors_name_the_keys(
    redis_server: RedisServer, env: dict[str, str], message: str
) -> None:
    shown = run_cli("run", "echo_app:app", "--port", "0", "--admin-port", "0",
                    env={**host_env(redis_server, "x1", "cfg"), **env})
    assert shown.returncode == 2 and message in shown.stderr, shown.stderr


# Forwarding: three hosts behind HAProxy doing plain round-robin


@dataclass
class Trio:
    hosts: list[Cluster]
    lb_url: str


@pytest.fixture(scope="module")
def trio(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trio]:
    tmp_path = tmp_path_factory.mktemp("trio")
    with hosts(redis_server, tmp_path, ("ta", "tb", "tc"), "trio") as clusters, \
            haproxy_round_robin([c.port for c in clusters], tmp_path) as lb:
        yield Trio(clusters, f"http://127.0.0.1:{lb}")


def metric(cluster: Cluster, name: str) -> float:
    _code, text = cluster.admin("/metrics")
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name))


def test_another_hosts_session_is_forwarded_polling_and_websocket(trio: Trio) -> None:
    a, b, c = trio.hosts

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            sid = (await handshake(http, a.url))["sid"]
            assert sid.startswith("ta-")
            assert await post(http, b.url, sid, "40") == 200  # forwarded by tb
            status, text = await poll(http, c.url, sid)  # forwarded by tc
            assert status == 200 and text.startswith("40"), (status, text)
            ws_url = b.url.replace("http", "ws", 1) + \
                f"{EIO_PATH}?EIO=4&transport=websocket&sid={sid}"
            ws = await http.ws_connect(ws_url)  # tunnelled by tb to ta
            await ws.send_str("2probe")
            assert (await ws.receive(timeout=10)).data == "3probe"
            await ws.send_str("5")
            who = await ws_call(ws, "whoami")
            assert who["pid"] in a.worker_pids() and who["sid"]
            # the owner believed the client address tb vouched for
            assert who["remote"] == "127.0.0.1"
            await ws.close()

    asyncio.run(main())
    assert metric(b, 'siocluster_forwarded_requests_total{kind="http",peer="ta"}') >= 1
    assert metric(b, 'siocluster_forwarded_requests_total{kind="websocket",peer="ta"}') == 1
    assert metric(c, 'siocluster_forwarded_bytes_total{direction="in",peer="ta"}') > 0
    assert metric(a, "siocluster_hosts") == 3
    # the dashboard lists the other hosts too
    with urllib.request.urlopen(a.admin_url + "/dashboard/stream", timeout=10) as resp:
        line = resp.readline()
        while not line.startswith(b"data: "):
            line = resp.readline()
    shown = json.loads(line.decode().removeprefix("data: "))["hosts"]
    assert [h["local"] for h in shown] == [True, False, False]
    assert shown[0]["host_id"] == "ta" and {h["host"] for h in shown[1:]} == {"tb", "tc"}
    assert {h["address"] for h in shown[1:]} == {f"127.0.0.1:{b.port}", f"127.0.0.1:{c.port}"}


def test_a_forged_forward_gets_403_and_is_counted(trio: Trio) -> None:
    a = trio.hosts[0]
    before = metric(a, "siocluster_forwards_refused_total")

    async def main() -> list[int]:
        codes = []
        async with aiohttp.ClientSession() as http:
            sid = (await handshake(http, a.url))["sid"]
            target = f"{EIO_PATH}?EIO=4&transport=polling&sid={sid}"
            forged = [
                "v1 tb 1 10.9.9.9 1 00",  # a bad MAC
                sign_forward("x" * 40, "tb", time.time(), "10.9.9.9", 1, "GET", target),
                sign_forward(TOKEN, "tb", time.time() - 120, "10.9.9.9", 1, "GET", target),
                sign_forward(TOKEN, "tb", time.time(), "10.9.9.9", 1, "POST", target),
            ]
            for value in forged:
                async with http.get(a.url + target,
                                    headers={"x-siocluster-forward": value}) as resp:
                    codes.append(resp.status)
            # and the genuine article passes
            good = sign_forward(TOKEN, "tb", time.time(), "10.9.9.9", 1, "POST", target)
            async with http.post(a.url + target, data=b"40",
                                 headers={"x-siocluster-forward": good}) as resp:
                codes.append(resp.status)
        return codes

    assert asyncio.run(main()) == [403, 403, 403, 403, 200]
    # a forwarded request is never forwarded again: a sid of another host gets the 400
    other = trio.hosts[1]

    async def relay_again() -> int:
        async with aiohttp.ClientSession() as http:
            sid = (await handshake(http, other.url))["sid"]
            target = f"{EIO_PATH}?EIO=4&transport=polling&sid={sid}"
            value = sign_forward(TOKEN, "tc", time.time(), "10.9.9.9", 1, "POST", target)
            async with http.post(a.url + target, data=b"40",
                                 headers={"x-siocluster-forward": value}) as resp:
                return resp.status

    assert asyncio.run(relay_again()) == 400
    assert metric(a, "siocluster_forwards_refused_total") - before == 4
    assert "claiming to be forwarded" in a.log()


def test_connect_storm_through_round_robin_loses_no_session(trio: Trio) -> None:
    def errors() -> list[tuple[int, int]]:
        return [(b["session_unknown_400"], b["upstream_errors_502"])
                for b in (h.status()["balancer"] for h in trio.hosts)]

    before = errors()
    forwarded = sum(metric(h, "siocluster_forwarded_requests_total") for h in trio.hosts)
    # A new connection for every request: round-robin sends most of a session's
    # requests to hosts that do not own it.
    sockets, failures, pids = asyncio.run(storm(trio.lb_url, force_close=True))
    assert failures == [], failures[:5]
    assert len(sockets) == SESSIONS
    assert pids == set().union(*(h.worker_pids() for h in trio.hosts))
    assert errors() == before, "no 400 and no 502 on any host"
    # sessions landed on one host and went on through another
    after = sum(metric(h, "siocluster_forwarded_requests_total") for h in trio.hosts)
    assert after - forwarded > SESSIONS, (forwarded, after)


def test_polling_clients_sharing_keep_alive_connections(trio: Trio) -> None:
    async def main() -> list[Any]:
        # One pool of keep-alive connections for all: a connection carries requests of
        # several sessions, which live on different hosts (nginx upstream keep-alive).
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            clients = [socketio.AsyncClient(reconnection=False, http_session=http)
                       for _ in range(12)]
            for client in clients:
                await client.connect(trio.lb_url, transports=["polling"], wait_timeout=10)
            answers = await asyncio.gather(*(
                client.call("echo", [i, j], timeout=10)
                for i, client in enumerate(clients) for j in range(5)))
            await asyncio.gather(*(disconnect(client) for client in clients))
            return answers

    answers = asyncio.run(main())
    assert answers == [[i, j] for i in range(12) for j in range(5)]


def test_broadcasts_and_the_official_js_client_across_hosts(
    trio: Trio, node_client: list[str]
) -> None:
    done = subprocess.run([*node_client, "broadcast", trio.lb_url, "--clients", "9"],
                          capture_output=True, text=True, timeout=NODE_TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["errors"] == [] and result["received"] == 9, result
    assert len(result["pids"]) == 3, "the clients spread over the three hosts"
    done = subprocess.run([*node_client, "sessions", trio.lb_url, "--clients", "6",
                           "--echoes", "3"],
                          capture_output=True, text=True, timeout=NODE_TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for mode in ("default", "polling"):
        assert results[mode]["errors"] == [], results[mode]
        assert results[mode]["connected"] == 6
        assert results[mode]["acks"] == results[mode]["acks_expected"], results[mode]


def test_a_killed_hosts_clients_reconnect_elsewhere_and_its_sids_get_400(
    redis_server: RedisServer, tmp_path: Path, node_client: list[str]
) -> None:
    with hosts(redis_server, tmp_path, ("da", "db"), "dead") as (a, b), \
            haproxy_round_robin([a.port, b.port], tmp_path) as lb:
        url = f"http://127.0.0.1:{lb}"
        stale = dict(zip((a.port, b.port), asyncio.run(sids(a.url, b.url)), strict=True))
        proc = subprocess.Popen([*node_client, "reconnect", url, "--transports", "polling"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            ready = read_line(proc, NODE_TIMEOUT_S)
            assert ready["event"] == "ready", ready
            victim, survivor = (a, b) if ready["pid"] in a.worker_pids() else (b, a)
            dead_id = "da" if victim is a else "db"
            victim_pids = victim.worker_pids()
            os.killpg(victim.proc.pid, signal.SIGKILL)
            for pid in victim_pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            # Its master too: until it is gone, its listener still completes a connect.
            eventually(lambda: not any(pid_alive(p) for p in {*victim_pids, victim.proc.pid}),
                       timeout_s=5, what="the dead host's processes gone")

            # Within the dead host's lease (3 s) its sids get the 400 at once (nothing
            # accepts the forward), not a 502, so clients re-handshake at once ...
            async def poll_stale() -> tuple[int, str]:
                async with aiohttp.ClientSession() as http:
                    return await poll(http, survivor.url, stale[victim.port])

            status, text = asyncio.run(poll_stale())
            assert status == 400 and "Session ID unknown" in text, (status, text)
            # ... and /health says a peer whose lease is live cannot be reached.
            code, health = survivor.admin("/health")
            assert code == 200 and health["status"] == "degraded", health
            assert any(f"peer host {dead_id} unreachable" in r for r in health["reasons"])
            out, err = proc.communicate(timeout=NODE_TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        result = json.loads(out.strip().splitlines()[-1])
        assert result["event"] == "reconnected", f"{result}\n{err}"
        assert result["errors"] == [], result
        assert result["pid"] in survivor.worker_pids()
        assert result["reconnect_ms"] < 10_000, result
        # Once the lease expired the host is gone from the listing and /health is ok.
        eventually(lambda: [h["id"] for h in survivor.status()["hosts"]] != [] and
                   dead_id not in [h["id"] for h in survivor.status()["hosts"]],
                   timeout_s=8, what="the dead host dropped")
        eventually(lambda: survivor.admin("/health")[1]["status"] == "ok", timeout_s=5,
                   what="/health ok again")


def test_a_killed_hosts_clients_recover_on_another_host(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Connection-state recovery across hosts: the session records and the packet log
    are in Redis, so clients of a host that was SIGKILLed recover, with the same id and
    nothing missed, on the host the load balancer sends them to next."""
    npm_install(JS)
    extra = {"SIOCLUSTER_RECOVERY_MAX_DISCONNECTION_S": str(WINDOW_S)}
    with hosts(redis_server, tmp_path, ("ra", "rb"), "recover", app="recovery_app:app",
               extra=extra) as (a, b), \
            haproxy_round_robin([a.port, b.port], tmp_path) as lb:
        proc = node("stream", f"http://127.0.0.1:{lb}", "--clients", "12")
        try:
            ready = read_json(proc)
            assert ready["event"] == "ready", ready
            on = {int(pid): n for pid, n in ready["pids"].items()}
            victim = a if sum(on.get(p, 0) for p in a.worker_pids()) >= \
                sum(on.get(p, 0) for p in b.worker_pids()) else b
            disrupted = sum(on.get(p, 0) for p in victim.worker_pids())
            victim_pids = victim.worker_pids()
            os.killpg(victim.proc.pid, signal.SIGKILL)
            for pid in victim_pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            assert proc.stdin is not None
            proc.stdin.write("finish\n")
            proc.stdin.flush()
            done = read_json(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        assert done["event"] == "done", done
        assert disrupted > 0
        check_everyone_recovered(done, disrupted, {}, {}, exact=False)
