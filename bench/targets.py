"""The servers under test, started as subprocesses on free loopback ports.

* :func:`cluster`: ``siocluster run bench_app:app --workers N`` (from
  ``bench/app/``), master pid and worker pids read from the admin ``/status``;
* :func:`standalone`: N ``python -m bench.standalone --port P`` servers, the
  "direct" baseline: no balancer, the clients spread over the ports; for the
  ASGI app (``bench_asgi``), N plain ``uvicorn bench_asgi:app --port P``
  processes instead, which is how FastAPI users run today (with a redis URL,
  ``bench_asgi`` takes python-socketio's ``AsyncRedisManager`` from
  ``BENCH_REDIS_URL``).

Both are context managers that stop what they started (SIGTERM, then SIGKILL)
even when the benchmark fails halfway.  The servers inherit the open-file
limit of the bench process (:class:`~bench.lab.Lab` raises it first).
``SIOCLUSTER_*`` variables of the caller's environment are dropped so a stray
setting cannot skew a run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Target", "TargetError", "answers", "cluster", "free_port", "standalone",
           "start_process", "stop_processes"]

BENCH_DIR = Path(__file__).resolve().parent
APP_DIR = BENCH_DIR / "app"
REPO_DIR = BENCH_DIR.parent
_SIOCLUSTER = [sys.executable, "-c", "from supervisor.cli import main; main()"]


class TargetError(Exception):
    """A server did not start, or died."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIOCLUSTER_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_process(cmd: list[str], cwd: Path, log: Path,
           env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    # A process group of its own keeps a terminal's Ctrl-C for the bench, which
    # stops the servers in order.  Not a session of its own: with Linux's
    # autogroup scheduling every session gets an equal CPU share, so N
    # standalone servers in N sessions would outweigh one cluster in one.
    with log.open("wb") as out:
        return subprocess.Popen(cmd, cwd=cwd, env={**_env(), **(env or {})}, stdout=out,
                                stderr=subprocess.STDOUT,
                                process_group=0)


def stop_processes(procs: list[subprocess.Popen[bytes]], extra_pids: set[int],
                   timeout_s: float) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5.0)
    for pid in extra_pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


@dataclass
class Target:
    """Where clients go, and which processes serve them, by role."""

    label: str
    urls: list[str]
    pids: dict[str, list[int]] = field(default_factory=dict)
    log_paths: list[Path] = field(default_factory=list)
    admin_url: str | None = None

    def balancer_stats(self) -> dict[str, Any]:
        """The cluster's balancer counters from ``/status`` (empty for standalone servers)."""
        if self.admin_url is None:
            return {}
        try:
            doc = _get_json(f"{self.admin_url}/status")
        except (OSError, ValueError):
            return {}
        stats: dict[str, Any] = doc.get("balancer", {})
        return stats

    def url_for(self, index: int) -> str:
        """Client ``index``'s server: round robin over the standalone ports."""
        return self.urls[index % len(self.urls)]

    def log_tail(self, lines: int = 20) -> str:
        out = []
        for path in self.log_paths:
            with contextlib.suppress(OSError):
                out += path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(out)


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=2.0) as resp:
        return json.loads(resp.read())


@contextlib.contextmanager
def cluster(workers: int, *, adapter: str, log_dir: Path, redis_url: str | None = None,
            websocket: str | None = None, timeout_s: float = 60.0,
            app: str = "bench_app", env: dict[str, str] | None = None,
            label: str | None = None) -> Iterator[Target]:
    port, admin_port = free_port(), free_port()
    log = log_dir / f"cluster-{adapter}-{port}.log"
    cmd = [*_SIOCLUSTER, "run", f"{app}:app", "--workers", str(workers), "--port", str(port),
           "--admin-port", str(admin_port), "--adapter", adapter, "--log-level", "warning"]
    if redis_url:
        cmd += ["--redis-url", redis_url]
    if websocket:
        cmd += ["--websocket", websocket]
    # The standalone baseline's AsyncRedisManager servers publish on python-socketio's
    # default channel of the same Redis: the cluster must not hear them as emitters.
    proc = start_process(cmd, APP_DIR, log, env={"SIOCLUSTER_ADAPTER_EMITTER_CHANNEL": "",
                                                 **(env or {})})
    target = Target(label or f"cluster/{adapter}", [f"http://127.0.0.1:{port}"], log_paths=[log],
                    admin_url=f"http://127.0.0.1:{admin_port}")
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise TargetError(f"cluster exited {proc.returncode}:\n{target.log_tail()}")
            with contextlib.suppress(OSError, ValueError):
                doc = _get_json(f"http://127.0.0.1:{admin_port}/status")
                ready = [w["pid"] for w in doc["workers"] if w["state"] == "ready"]
                if len(ready) >= workers:
                    target.pids = {"master": [int(doc["master"]["pid"])], "workers": ready}
                    break
            if time.monotonic() > deadline:
                raise TargetError(f"cluster not ready in {timeout_s}s:\n{target.log_tail()}")
            time.sleep(0.1)
        yield target
    finally:
        stop_processes([proc], set(target.pids.get("workers", [])), 30.0)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/socket.io/?EIO=4&transport=polling",
                                    timeout=1.0) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


@contextlib.contextmanager
def standalone(servers: int, *, log_dir: Path, redis_url: str | None = None,
               timeout_s: float = 30.0, app: str = "bench_app") -> Iterator[Target]:
    procs: list[subprocess.Popen[bytes]] = []
    label = "standalone/redis" if redis_url else "standalone"
    target = Target(label, [])
    try:
        for _ in range(servers):
            port = free_port()
            log = log_dir / f"standalone-{port}.log"
            if app == "bench_asgi":
                cmd = [sys.executable, "-m", "uvicorn", f"{app}:app", "--port", str(port),
                       "--loop", "uvloop", "--http", "httptools", "--log-level", "warning",
                       "--no-access-log"]
                env = {"BENCH_REDIS_URL": redis_url} if redis_url else None
                procs.append(start_process(cmd, APP_DIR, log, env=env))
            else:
                cmd = [sys.executable, "-m", "bench.standalone", "--port", str(port),
                       "--app", app]
                if redis_url:
                    cmd += ["--redis-url", redis_url]
                procs.append(start_process(cmd, REPO_DIR, log))
            target.urls.append(f"http://127.0.0.1:{port}")
            target.log_paths.append(log)
        deadline = time.monotonic() + timeout_s
        for proc, url in zip(procs, target.urls, strict=True):
            while not answers(url):
                if proc.poll() is not None:
                    raise TargetError(f"{url} exited {proc.returncode}:\n{target.log_tail()}")
                if time.monotonic() > deadline:
                    raise TargetError(f"{url} not up in {timeout_s}s:\n{target.log_tail()}")
                time.sleep(0.1)
        target.pids = {"servers": [proc.pid for proc in procs]}
        yield target
    finally:
        stop_processes(procs, set(), 15.0)
