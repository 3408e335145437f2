"""@singleton with the ``amqp`` adapter backend: RabbitMQ's exclusive queues as the lease.

Two hosts (two clusters) share a real RabbitMQ: one ticker across both; a
killed holder is replaced at the next poll; a stopped holder is replaced once
the broker's heartbeat check closes its connection, and never ticks again
after SIGCONT; a rolling restart hands over without overlap; every host's
/status names the holder.  The lease is 1 s, so the lease connection's
heartbeat is 1 s (:func:`worker.lease.amqp_heartbeat_s`).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.cluster import start_cluster
from tests.integration.test_singleton import (
    APP,
    LEASE_S,
    _env,
    assert_one_ticker_at_a_time,
    emitted,
    max_gap,
    two_hosts_one_holder,
)
from tests.rabbitmq_server import RabbitMQServer
from worker.lease import amqp_heartbeat_s

# RabbitMQ closes a silent connection 2 to 3 heartbeat timeouts after the last
# byte; the candidates poll every third of the lease.
BROKER_NOTICES_S = 3 * amqp_heartbeat_s(LEASE_S) + LEASE_S / 3 + 0.5


def _amqp_env(tmp_path: Path, server: RabbitMQServer, channel: str) -> dict[str, str]:
    return {**_env(tmp_path), "SIOCLUSTER_ADAPTER_BACKEND": "amqp",
            "SIOCLUSTER_ADAPTER_AMQP_URL": server.url,
            "SIOCLUSTER_ADAPTER_CHANNEL": channel,
            "SIOCLUSTER_HEALTH_HEARTBEAT_TIMEOUT_S": "30"}


def test_amqp_two_hosts_one_holder_failover_and_fencing(
    rabbitmq_server: RabbitMQServer, tmp_path: Path
) -> None:
    env = _amqp_env(tmp_path, rabbitmq_server, "sioc-single-a")
    singles, log = two_hosts_one_holder(tmp_path, env, what="amqp",
                                        replaced_within=BROKER_NOTICES_S)
    assert all(single["token"] >= 3 for single in singles), singles
    assert "lease lost; cancelling" in log


def test_amqp_rolling_restart_hands_over_without_gap_or_overlap(
    rabbitmq_server: RabbitMQServer, tmp_path: Path
) -> None:
    env = _amqp_env(tmp_path, rabbitmq_server, "sioc-single-b")
    with start_cluster(APP, workers=2, tmp_path=tmp_path, env=env) as cluster:
        deadline = time.monotonic() + 15
        while len(emitted(tmp_path)) < 5:
            assert time.monotonic() < deadline, cluster.log()
            time.sleep(0.05)
        old = set(cluster.worker_pids())
        rolled = time.time()
        os.kill(cluster.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 30
        while not (set(cluster.worker_pids()).isdisjoint(old) and
                   [r for r in emitted(tmp_path) if r[0] not in old and r[2] > rolled + 1]):
            assert time.monotonic() < deadline, cluster.log()
            time.sleep(0.1)
        rows = emitted(tmp_path)
        during = [r for r in rows if r[2] >= rolled - 0.5]
        gap = max_gap(during)
        print(f"amqp SIGHUP roll: {len({r[0] for r in during})} tickers, "
              f"longest gap {gap:.2f}s")
        assert gap <= LEASE_S, gap
        assert_one_ticker_at_a_time(rows)
        assert rows[-1][0] not in old
    assert "released the lease" in cluster.log()


def test_amqp_broker_outage_stops_the_holder_at_once_then_resumes(
    rabbitmq_server: RabbitMQServer, tmp_path: Path
) -> None:
    """The lease connection closing under the holder stops it at once (the broker,
    back, would free the lock to anyone), not when its validity runs out."""
    env = _amqp_env(tmp_path, rabbitmq_server, "sioc-single-c")
    with start_cluster(APP, workers=2, tmp_path=tmp_path, env=env) as cluster:
        deadline = time.monotonic() + 15
        while len(emitted(tmp_path)) < 5:
            assert time.monotonic() < deadline, cluster.log()
            time.sleep(0.05)
        rabbitmq_server.kill()
        killed = time.time()
        try:
            time.sleep(LEASE_S + 1.0)
            last = emitted(tmp_path)[-1][2]
            print(f"amqp down: last tick {last - killed:.2f}s after the kill")
            assert last - killed < 0.5, "the holder stopped when its connection went"
        finally:
            rabbitmq_server.start()
        restarted = time.time()
        deadline = time.monotonic() + 20
        while emitted(tmp_path)[-1][2] < restarted:
            assert time.monotonic() < deadline, cluster.log()
            time.sleep(0.05)
        print(f"amqp back: ticking again after {emitted(tmp_path)[-1][2] - restarted:.2f}s")
        time.sleep(1.0)
        rows = emitted(tmp_path)
        # (a worker that holds it again counts its ticks from 1: check each side)
        assert_one_ticker_at_a_time([r for r in rows if r[2] < killed])
        assert_one_ticker_at_a_time([r for r in rows if r[2] > restarted])
        log = cluster.log()
        assert "lease lost; cancelling" in log
        # aiormq logs each failed attempt, one line each; the lease polls back off
        # (0.5 s doubling, up to five leases), as the adapter does.
        attempts = log.count("error when creating transport")
        print(f"amqp down: {attempts} failed connection attempts logged "
              f"in {restarted - killed:.1f}s by 2 workers (adapter and leases)")
