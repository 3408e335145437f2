"""The official JavaScript client (socket.io-client v4 on Node) against a real cluster.

tests/js/client.mjs does the client side and prints JSON; these tests start the cluster, run it,
kill workers under it, and check what it saw. Needs node and npm; the fixture installs the npm
package into tests/js/node_modules when it is missing.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import Cluster, start_cluster
from tests.system import missing

JS = Path(__file__).resolve().parent.parent / "js"
CLIENTS = 12
ECHOES = 3
NODE_TIMEOUT_S = 30.0


def npm_install(project: Path) -> None:
    """``npm ci`` (``npm install`` without a lockfile) unless node_modules is already there."""
    if (project / "node_modules").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        missing("node and npm are needed for the socket.io-client tests "
                "(apt-get install nodejs npm)")
    command = "ci" if (project / "package-lock.json").is_file() else "install"
    done = subprocess.run([npm, command, "--no-audit", "--no-fund"], cwd=project,
                          capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        pytest.fail(f"`npm {command}` in {project} failed with exit code {done.returncode}; "
                    f"run it there by hand to see why.\n{done.stdout}\n{done.stderr}",
                    pytrace=False)


@pytest.fixture(scope="session")
def node_client() -> list[str]:
    npm_install(JS)
    node = shutil.which("node")
    assert node is not None
    return [node, str(JS / "client.mjs")]


def run_sessions(node_client: list[str], cluster: Cluster) -> dict[str, Any]:
    done = subprocess.run([*node_client, "sessions", cluster.url, "--clients", str(CLIENTS),
                           "--echoes", str(ECHOES)],
                          capture_output=True, text=True, timeout=NODE_TIMEOUT_S, check=False)
    assert done.returncode == 0, f"node failed:\n{done.stderr}\n{cluster.log()}"
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.parametrize("websocket", ["tunnel", "handoff"])
def test_official_client_events_and_acks(tmp_path: Path, node_client: list[str],
                                         websocket: str) -> None:
    with start_cluster(workers=2, tmp_path=tmp_path, args=("--websocket", websocket)) as cluster:
        pids = sorted(w["pid"] for w in cluster.ready_workers())
        results = run_sessions(node_client, cluster)

        for mode, transport in (("default", "websocket"), ("polling", "polling")):
            result = results[mode]
            assert result["errors"] == [], f"{mode}: {result['errors']}"
            assert result["connected"] == CLIENTS, result
            assert result["acks"] == result["acks_expected"] == CLIENTS * (ECHOES + 3), result
            assert result["pids"] == pids, f"{mode}: sessions should spread over both workers"
            assert result["transports"] == {transport: CLIENTS}, result
            assert result["hosts"] == [f"127.0.0.1:{cluster.port}"], result
        balancer = cluster.status()["balancer"]
        assert balancer["session_unknown_400"] == 0, balancer
        assert balancer["upstream_errors_502"] == 0, balancer


def read_line(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    if not line:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"node printed nothing within {timeout}s:\n{err}")
    return json.loads(line)  # type: ignore[no-any-return]


@pytest.mark.parametrize(("transports", "websocket"), [
    ("default", "tunnel"),
    ("default", "handoff"),
    ("polling", "tunnel"),
])
def test_official_client_reconnects_after_worker_is_killed(
        tmp_path: Path, node_client: list[str], transports: str, websocket: str) -> None:
    with start_cluster(workers=2, tmp_path=tmp_path, args=("--websocket", websocket)) as cluster:
        proc = subprocess.Popen([*node_client, "reconnect", cluster.url,
                                 "--transports", transports],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            ready = read_line(proc, NODE_TIMEOUT_S)
            assert ready["event"] == "ready", ready
            assert ready["transport"] == ("polling" if transports == "polling" else "websocket")
            victim = ready["pid"]
            assert victim in {w["pid"] for w in cluster.status()["workers"]}
            os.kill(victim, signal.SIGKILL)

            out, err = proc.communicate(timeout=NODE_TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        result = json.loads(out.strip().splitlines()[-1])
        assert result["event"] == "reconnected", f"{result}\n{err}\n{cluster.log()}"
        assert result["errors"] == [], result
        assert result["before_pid"] == victim
        assert result["pid"] != victim, "whoami answered from the killed worker"
        assert result["connects"] == 2, result
        assert result["transport"] == ready["transport"], result
        # The kill is seen at once (closed socket or failed poll), not after a ping timeout.
        assert result["reconnect_ms"] < 10_000, result
        assert result["pid"] in cluster.worker_pids()
