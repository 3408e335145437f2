"""Start a real cluster as a subprocess on free ports, for integration tests."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

APPS = Path(__file__).parent / "apps"
SIOCLUSTER = [sys.executable, "-c", "from supervisor.cli import main; main()"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    proc: subprocess.Popen[str]
    port: int
    admin_port: int
    log_path: Path
    token: str = ""
    _stopped: bool = field(default=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def admin(self, path: str, method: str = "GET", body: Any = None) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.admin_url + path, data=data, method=method,
                                     headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                raw = resp.read()
                code = resp.status
        except urllib.error.HTTPError as exc:
            raw, code = exc.read(), exc.code
        try:
            return code, json.loads(raw)
        except ValueError:
            return code, raw.decode()

    def status(self) -> dict[str, Any]:
        return self.admin("/status")[1]  # type: ignore[no-any-return]

    def ready_workers(self) -> list[dict[str, Any]]:
        return [w for w in self.status()["workers"] if w["state"] == "ready"]

    def wait_ready(self, count: int, timeout: float = 30.0,
                   exclude_pids: set[int] | None = None) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"cluster exited {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError, ValueError, KeyError):
                ready = [w for w in self.ready_workers()
                         if not exclude_pids or w["pid"] not in exclude_pids]
                last = ready
                if len(ready) >= count:
                    return ready
            time.sleep(0.05)
        raise AssertionError(f"not {count} ready workers after {timeout}s: {last}\n{self.log()}")

    def worker_pids(self) -> set[int]:
        return {w["pid"] for w in self.status()["workers"] if w["pid"]}

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self._stopped = True


_COUNTER = itertools.count()
_LISTENING = re.compile(r" on http://[^ ]+:(\d+) \(admin http://[^ ]+:(\d+)\)")


def _bound_ports(cluster: Cluster, timeout: float = 30.0) -> tuple[int, int]:
    """The (public, admin) ports the cluster logged once it bound them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _LISTENING.search(cluster.log())
        if found:
            return int(found.group(1)), int(found.group(2))
        if cluster.proc.poll() is not None:
            # Exited before listening (a config error, a boot failure): no ports.
            return 0, 0
        time.sleep(0.02)
    raise AssertionError(f"the cluster logged no listening ports in {timeout}s:\n{cluster.log()}")


def _limit_nofile(limit: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return apply


def run_cli(*args: str, cwd: Path = APPS, env: dict[str, str] | None = None,
            timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SIOCLUSTER, *args], cwd=cwd, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=timeout, check=False)


@contextlib.contextmanager
def start_cluster(app: str = "echo_app:app", *, workers: int = 2, args: tuple[str, ...] = (),
                  env: dict[str, str] | None = None, cwd: Path = APPS,
                  config: str | None = None, tmp_path: Path | None = None,
                  wait: bool = True, token: str = "",
                  nofile: int | None = None) -> Iterator[Cluster]:
    """``nofile``: start the master with this open-files limit, soft and hard."""
    # Port 0: the cluster binds free ports itself and logs them; no race with
    # another process taking a port between our probe and its bind.
    workdir = tmp_path or Path(os.environ.get("TMPDIR", "/tmp"))
    name = f"{os.getpid()}-{next(_COUNTER)}"
    log_path = workdir / f"cluster-{name}.log"
    cmd = [*SIOCLUSTER, "run", app, "--workers", str(workers), "--port", "0",
           "--admin-port", "0", *args]
    if config is not None:
        cfg = workdir / f"cluster-{name}.toml"
        cfg.write_text(config)
        cmd += ["--config", str(cfg)]
    full_env = {**os.environ, "SIOCLUSTER_ADAPTER_BACKEND": os.environ.get(
        "SIOCLUSTER_TEST_ADAPTER", "local"), **(env or {})}
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True,
                                preexec_fn=None if nofile is None else _limit_nofile(nofile))
    cluster = Cluster(proc, 0, 0, log_path, token=token)
    try:
        cluster.port, cluster.admin_port = _bound_ports(cluster)
        if wait:
            cluster.wait_ready(workers)
        yield cluster
    finally:
        pids: set[int] = set()
        with contextlib.suppress(Exception):
            if proc.poll() is None:
                pids = cluster.worker_pids()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
