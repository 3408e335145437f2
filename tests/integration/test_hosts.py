"""Several hosts, one cluster: registry, forwarding, and a plain round-robin balancer in front.

Each "host" is a separate siocluster process (its own master, workers and
ports) on this machine, sharing one real redis-server; HAProxy in front does
round-robin over TCP with no stickiness of any kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.cluster import Cluster, run_cli, start_cluster
from tests.eio import handshake
from tests.redis_server import RedisServer, redis_server_fixture
from tests.waiting import eventually

redis_server = redis_server_fixture(scope="module")

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
    }


@contextlib.contextmanager
def hosts(redis: RedisServer, tmp_path: Path, ids: tuple[str, ...], channel: str,
          app: str = "echo_app:app") -> Iterator[list[Cluster]]:
    with contextlib.ExitStack() as stack:
        clusters = []
        for host_id in ids:
            workdir = tmp_path / host_id
            workdir.mkdir()
            clusters.append(stack.enter_context(start_cluster(
                app, workers=1, tmp_path=workdir, env=host_env(redis, host_id, channel))))
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
