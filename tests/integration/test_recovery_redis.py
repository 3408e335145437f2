"""Connection-state recovery on the ``redis`` backend (Redis Streams + session keys).

The same official-client stream as tests/integration/test_recovery.py (30 receivers, a
sender that retries what is not acknowledged), on a 2-worker cluster whose adapter is a
real redis-server: kill -9 the worker holding the most receivers, then a SIGHUP roll;
every reconnection is recovered and no acknowledged number is missed; then redis-server
is killed and restarted under the stream: emits wait, none is lost.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from tests.cluster import Cluster, start_cluster
from tests.integration.test_js_client import JS, npm_install
from tests.integration.test_recovery import (
    WINDOW_S,
    check_everyone_recovered,
    recovery_status,
    rolled,
    run_stream,
)
from tests.redis_server import RedisServer, redis_server_fixture
from tests.waiting import eventually

redis_server = redis_server_fixture(scope="module")


@pytest.fixture(scope="module")
def cluster(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Cluster]:
    npm_install(JS)
    env = {"SIOCLUSTER_RECOVERY_MAX_DISCONNECTION_S": str(WINDOW_S),
           "SIOCLUSTER_ADAPTER_BACKEND": "redis",
           "SIOCLUSTER_ADAPTER_REDIS_URL": redis_server.url,
           "SIOCLUSTER_HEALTH_DRAIN_SPREAD_S": "1.0"}
    with start_cluster("recovery_app:app", workers=2, env=env,
                       tmp_path=tmp_path_factory.mktemp("recovery-redis")) as c:
        yield c


def test_redis_kill_9_and_roll_every_client_recovers(cluster: Cluster) -> None:
    killed: dict[str, int] = {}

    def kill(pids: dict[int, int]) -> None:
        victim = max(pids, key=lambda p: pids[p])
        killed["receivers"] = pids[victim]
        os.kill(victim, signal.SIGKILL)
        cluster.wait_ready(2, exclude_pids={victim})

    done, before = run_stream(cluster, kill)
    after = recovery_status(cluster)
    assert after["backend"] == "redis"
    check_everyone_recovered(done, killed["receivers"], before, after, exact=False)

    def roll(pids: dict[int, int]) -> None:
        old = cluster.worker_pids()
        cluster.proc.send_signal(signal.SIGHUP)
        rolled(cluster, old)

    done, before = run_stream(cluster, roll)
    check_everyone_recovered(done, 30, before, recovery_status(cluster), exact=False)
    # The new workers' counters arrive with their next heartbeats.
    eventually(lambda: (lambda s: s["appended"] > 0 and s["recovered"] > 0)(
        recovery_status(cluster)), what="the new workers' recovery counters")


def test_redis_outage_delays_but_loses_no_acknowledged_emit(
        cluster: Cluster, redis_server: RedisServer) -> None:
    """redis-server is killed under the stream and restarted a second later (empty: no
    persistence): the workers queue the emits in order and deliver them once it is back."""

    def outage(pids: dict[int, int]) -> None:
        redis_server.kill()
        time.sleep(1.0)
        redis_server.start()
        eventually(lambda: recovery_status(cluster)["degraded_workers"] == 0, timeout_s=15,
                   what="the workers to reach redis again")

    done, before = run_stream(cluster, outage)
    assert done["errors"] == [], done["errors"]
    after = recovery_status(cluster)
    assert after["redis_failures"] > before["redis_failures"], after  # it saw the outage
    for r in done["receivers"]:
        assert r["connects"] == 1, r  # the outage did not cost any client its connection
        assert r["missed_count"] == 0, r
