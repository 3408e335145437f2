"""Connection-state recovery with the official socket.io-client (Node), default options.

30 receivers in a room get a numbered stream from a sender that retries what is not
acknowledged (tests/js/recovery.mjs; the app is tests/apps/recovery_app.py).  One cluster
(2 workers, local backend, a 10 s window) serves the first two tests, a second one (1 worker,
a 2 s window) the last:

* kill -9 the worker holding the most receivers: every reconnection is recovered (same id,
  ``socket.recovered``), and no acknowledged number is missed;
* a SIGHUP roll under the same load: the same;
* a client offline shorter than the window is recovered; one offline longer gets a fresh
  session (new id, ``recovered`` false), never a partial replay.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster import Cluster, start_cluster
from tests.integration.test_js_client import JS, npm_install

WINDOW_S = 10.0  # a roll moves some clients twice, with socket.io-client's backoff between
SHORT_WINDOW_S = 2.0
CLIENTS = 30
NODE_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    npm_install(JS)
    env = {"SIOCLUSTER_RECOVERY_MAX_DISCONNECTION_S": str(WINDOW_S),
           "SIOCLUSTER_ADAPTER_BACKEND": "local"}
    with start_cluster("recovery_app:app", workers=2, env=env,
                       tmp_path=tmp_path_factory.mktemp("recovery")) as c:
        yield c


@pytest.fixture(scope="module")
def short_window_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    env = {"SIOCLUSTER_RECOVERY_MAX_DISCONNECTION_S": str(SHORT_WINDOW_S),
           "SIOCLUSTER_ADAPTER_BACKEND": "local"}
    with start_cluster("recovery_app:app", workers=1, env=env,
                       tmp_path=tmp_path_factory.mktemp("recovery-short")) as c:
        yield c


def node(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(["node", str(JS / "recovery.mjs"), *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_json(proc: subprocess.Popen[str], timeout: float = NODE_TIMEOUT_S) -> dict[str, Any]:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    if not line:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"node printed nothing within {timeout}s:\n{err}")
    return json.loads(line)  # type: ignore[no-any-return]


def recovery_status(cluster: Cluster) -> dict[str, Any]:
    return cluster.status()["recovery"]  # type: ignore[no-any-return]


def run_stream(cluster: Cluster, disrupt: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    before = recovery_status(cluster)
    proc = node("stream", cluster.url, "--clients", str(CLIENTS))
    try:
        ready = read_json(proc)
        assert ready["event"] == "ready", ready
        disrupt({int(pid): n for pid, n in ready["pids"].items()})
        assert proc.stdin is not None
        proc.stdin.write("finish\n")
        proc.stdin.flush()
        done = read_json(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert done["event"] == "done", f"{done}\n{cluster.log()[-3000:]}"
    return done, before


def check_everyone_recovered(done: dict[str, Any], disrupted: int,
                             before: dict[str, Any], after: dict[str, Any]) -> None:
    assert done["errors"] == [], done["errors"]
    receivers = done["receivers"]
    assert done["acked"] >= 30, done
    reconnected = [r for r in receivers if r["connects"] > 1]
    assert len(reconnected) >= disrupted, (disrupted, receivers)
    for r in receivers:
        assert r["not_recovered"] == 0, r
        assert r["recovered"] == r["connects"] - 1, r
        assert r["same_id"], r
        assert r["missed_count"] == 0, r
    for w in done["whoami"]:
        assert "stream" in w["rooms"], w
        assert w["name"] is not None, w  # the session data came back
    assert after["recovered"] - before["recovered"] >= len(reconnected), (before, after)
    assert after["not_recovered"] == before["not_recovered"], (before, after)


def test_kill_9_worker_every_client_recovers(cluster: Cluster) -> None:
    killed: dict[str, int] = {}

    def kill(pids: dict[int, int]) -> None:
        victim = max(pids, key=lambda p: pids[p])
        killed.update(pid=victim, receivers=pids[victim])
        os.kill(victim, signal.SIGKILL)
        cluster.wait_ready(2, exclude_pids={victim})
        time.sleep(1.0)

    done, before = run_stream(cluster, kill)
    after = recovery_status(cluster)
    check_everyone_recovered(done, killed["receivers"], before, after)
    assert after["replayed"] >= before["replayed"], after


def test_sighup_roll_every_client_recovers(cluster: Cluster) -> None:
    moved: dict[str, int] = {}

    def roll(pids: dict[int, int]) -> None:
        old = cluster.worker_pids()
        moved["receivers"] = sum(pids.values())
        cluster.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            workers = cluster.status()["workers"]
            if (len(workers) == 2 and all(w["state"] == "ready" for w in workers)
                    and not {w["pid"] for w in workers} & old):
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"the roll did not finish:\n{cluster.log()[-3000:]}")
        time.sleep(1.0)

    done, before = run_stream(cluster, roll)
    after = recovery_status(cluster)
    check_everyone_recovered(done, moved["receivers"], before, after)


def test_offline_longer_than_the_window_gets_a_fresh_session(
        short_window_cluster: Cluster) -> None:
    cluster = short_window_cluster
    before = recovery_status(cluster)
    proc = node("offline", cluster.url, "--short-ms", "500",
                "--long-ms", str(int((SHORT_WINDOW_S + 1.5) * 1000)))
    try:
        done = read_json(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert done["event"] == "done", done
    assert done["errors"] == [], done["errors"]
    short, long = done["receivers"]
    assert short["recovered"] == 1 and short["same_id"] and short["missed_count"] == 0, short
    assert long["recovered"] == 0 and long["not_recovered"] == 1, long
    assert not long["same_id"], long
    assert done["whoami"][1]["recovered"] is False
    assert "stream" in done["whoami"][1]["rooms"]  # a fresh connect: the handler ran again
    after = recovery_status(cluster)
    # "expired" when the attempt finds it past its window, "unknown" once the once-a-second
    # trim has already dropped it.
    fresh = sum(after["not_recovered"].get(k, 0) - before["not_recovered"].get(k, 0)
                for k in ("expired", "unknown"))
    assert fresh == 1, (before, after)
