"""Starting, failing to start, and stopping, as a user sees it."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.cluster import free_port, pid_alive, run_cli, start_cluster


def _args(*extra: str) -> list[str]:
    return ["run", "--port", str(free_port()), "--admin-port", str(free_port()), *extra]


@pytest.mark.parametrize(("app", "needles"), [
    ("nosuchmodule:app", ["cannot import module 'nosuchmodule'", "ModuleNotFoundError"]),
    ("broken_import:app", ["cannot import module 'broken_import'",
                           "this_module_does_not_exist", "Traceback"]),
    ("echo_app:nope", ["module 'echo_app' has no attribute 'nope'"]),
    ("not_an_app:sio", ["app 'not_an_app:sio' is a builtins.int", "socketio.AsyncServer"]),
])
def test_bad_app_stops_the_cluster_with_the_reason(app: str, needles: list[str]) -> None:
    started = time.monotonic()
    result = run_cli(*_args(app, "--workers", "2"))
    assert result.returncode == 3, result.stderr
    assert time.monotonic() - started < 20
    for needle in needles:
        assert needle in result.stderr, result.stderr
    assert result.stderr.count("restarting") == 0, "no respawn loop"


def test_malformed_app_spec_is_a_usage_error() -> None:
    result = run_cli(*_args("echo_app"))
    assert result.returncode == 2
    assert "not of the form module:attr" in result.stderr


def test_bad_config_file_names_key_file_and_suggestion(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[health]\nheartbeat_timout_s = 2\n")
    result = run_cli(*_args("echo_app:app", "--config", str(cfg)))
    assert result.returncode == 2
    assert str(cfg) in result.stderr
    assert "health.heartbeat_timout_s" in result.stderr
    assert "did you mean 'heartbeat_timeout_s'" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_environment_and_missing_config(tmp_path: Path) -> None:
    result = run_cli(*_args("echo_app:app"), env={"SIOCLUSTER_BALANCER_PORT": "http"})
    assert result.returncode == 2 and "SIOCLUSTER_BALANCER_PORT" in result.stderr
    result = run_cli(*_args("echo_app:app", "--config", str(tmp_path / "missing.toml")))
    assert result.returncode == 2 and "missing.toml: config file not found" in result.stderr


def test_admin_off_loopback_needs_a_token() -> None:
    result = run_cli(*_args("echo_app:app", "--admin-host", "0.0.0.0"))
    assert result.returncode == 2 and "token" in result.stderr


def test_port_in_use_is_a_clear_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = run_cli("run", "echo_app:app", "--port", str(port),
                         "--admin-port", str(free_port()))
    assert result.returncode == 1
    assert "cannot listen" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_exits_zero_and_leaves_nothing(tmp_path: Path, sig: int) -> None:
    with start_cluster(workers=2, tmp_path=tmp_path) as cluster:
        pids = cluster.worker_pids()
        runtime_dir = cluster.status()["runtime_dir"]
        assert os.path.isdir(runtime_dir)
        assert cluster.stop(sig, timeout=20) == 0
        assert not any(pid_alive(p) for p in pids)
        assert not os.path.exists(runtime_dir)
        assert "stopped" in cluster.log()


def test_workers_exit_when_the_master_is_sigkilled(tmp_path: Path) -> None:
    with start_cluster(workers=2, tmp_path=tmp_path) as cluster:
        pids = cluster.worker_pids()
        cluster.proc.kill()
        cluster.proc.wait()
        deadline = time.monotonic() + 10
        while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(pid_alive(p) for p in pids), "workers outlived their master"


def test_status_command_prints_a_table(tmp_path: Path) -> None:
    with start_cluster(workers=2, tmp_path=tmp_path) as cluster:
        args = ["--admin-port", str(cluster.admin_port)]
        table = run_cli("status", *args)
        assert table.returncode == 0, table.stderr
        assert "SLOT" in table.stdout and table.stdout.count("ready") >= 2
        as_json = run_cli("status", "--json", *args)
        assert '"workers"' in as_json.stdout
    gone = run_cli("status", "--admin-port", str(free_port()))
    assert gone.returncode == 1 and "no cluster answers" in gone.stderr


def test_no_ready_worker_is_503(tmp_path: Path) -> None:
    config = '[health]\non_boot_failure = "retry"\n'
    with start_cluster("broken_import:app", workers=1, tmp_path=tmp_path, config=config,
                       wait=False) as cluster:
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + 10
        while True:
            try:
                code, health = cluster.admin("/health")
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert code == 503 and health["status"] == "unavailable"
        try:
            urllib.request.urlopen(cluster.url + "/socket.io/?EIO=4&transport=polling")
            raise AssertionError("expected 503")
        except urllib.error.HTTPError as exc:
            assert exc.code == 503
        assert cluster.proc.poll() is None, "the master stays up"


def test_cli_scale_reload_stop_and_json_logs(tmp_path: Path) -> None:
    import json

    with start_cluster(workers=1, tmp_path=tmp_path, args=("--log-format", "json")) as cluster:
        admin = ["--admin-port", str(cluster.admin_port)]
        assert run_cli("scale", "2", *admin).returncode == 0
        cluster.wait_ready(2)
        before = cluster.worker_pids()
        assert run_cli("reload", *admin).returncode == 0
        deadline = time.monotonic() + 30
        while True:
            ready = {w["pid"] for w in cluster.ready_workers()}
            if len(ready) == 2 and not ready & before and len(cluster.status()["workers"]) == 2:
                break
            assert time.monotonic() < deadline, "reload did not replace every worker"
            time.sleep(0.1)
        assert run_cli("stop", *admin).returncode == 0
        assert cluster.proc.wait(20) == 0
        lines = [line for line in cluster.log().splitlines() if line.strip()]
        entries = [json.loads(line) for line in lines]
        assert {e["role"] for e in entries} == {"master", "worker"}
        assert all(isinstance(e["pid"], int) for e in entries)
        assert {e["slot"] for e in entries if e["role"] == "worker"} == {0, 1}
