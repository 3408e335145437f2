"""The peer systems of ``python -m bench --peers``, started and stopped by the bench.

* :func:`node_cluster`: Node's socket.io cluster, the way socket.io's docs set
  it up on one machine (``bench/node/server.mjs``): a primary that owns the
  port and hands each connection to one of N workers (``@socket.io/sticky``),
  workers that broadcast to each other through the primary
  (``@socket.io/cluster-adapter``).  ``npm ci`` runs in ``bench/node/`` first
  when ``node_modules`` is missing (versions pinned by its lockfile).
* :func:`haproxy_stack`: what python-socketio users deploy today on several
  cores: HAProxy in HTTP mode in front of N python-socketio servers (the very
  "direct" servers of :func:`bench.targets.standalone`), sticky by a cookie
  HAProxy inserts (``cookie SRV insert indirect nocache``, HAProxy's own
  recipe for session affinity; new sessions round robin), and
  python-socketio's ``AsyncRedisManager`` on a throwaway redis-server so the
  servers can broadcast to each other.

Both serve the events of ``bench/app/bench_app.py``, on one loopback port,
from processes in the bench's session (see :mod:`bench.targets` on why), and
are context managers that stop everything they started.  A missing ``node`` or
``haproxy`` raises :class:`~bench.targets.TargetError` naming the program.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

from .limits import nofile_limit
from .targets import (
    BENCH_DIR,
    Target,
    TargetError,
    answers,
    free_port,
    standalone,
    start_process,
    stop_processes,
)

__all__ = ["NODE_DIR", "haproxy_config", "haproxy_stack", "node_cluster", "npm_ci"]

NODE_DIR = BENCH_DIR / "node"
_SBIN = ("/usr/sbin", "/usr/local/sbin", "/usr/bin")


def _program(name: str) -> str:
    found = shutil.which(name) or next(
        (f"{d}/{name}" for d in _SBIN if Path(f"{d}/{name}").is_file()), None)
    if found is None:
        raise TargetError(f"{name} is not installed: --peers needs it "
                          f"(apt-get install {'nodejs npm' if name in ('node', 'npm') else name})")
    return found


def npm_ci(directory: Path = NODE_DIR, timeout_s: float = 300.0) -> None:
    """Install the Node peer's packages from its lockfile when ``node_modules`` is missing."""
    if (directory / "node_modules").is_dir():
        return
    npm = _program("npm")
    done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--silent"], cwd=directory,
                          capture_output=True, text=True, timeout=timeout_s, check=False)
    if done.returncode != 0:
        raise TargetError(f"npm ci in {directory} failed ({done.returncode}):\n"
                          f"{done.stderr[-2000:]}")


def _wait_up(target: Target, procs: list[subprocess.Popen[bytes]], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not answers(target.urls[0]):
        for proc in procs:
            if proc.poll() is not None:
                raise TargetError(f"{target.label} exited {proc.returncode}:\n"
                                  f"{target.log_tail()}")
        if time.monotonic() > deadline:
            raise TargetError(f"{target.label} not up in {timeout_s}s:\n{target.log_tail()}")
        time.sleep(0.1)


@contextlib.contextmanager
def node_cluster(workers: int, *, log_dir: Path, timeout_s: float = 60.0) -> Iterator[Target]:
    node = _program("node")
    npm_ci()
    port = free_port()
    log = log_dir / f"node-{port}.log"
    proc = start_process([node, str(NODE_DIR / "server.mjs"), str(port), str(workers)],
                         NODE_DIR, log)
    target = Target("node", [f"http://127.0.0.1:{port}"], log_paths=[log])
    children: set[int] = set()
    try:
        _wait_up(target, [proc], timeout_s)
        with contextlib.suppress(psutil.Error):
            children = {c.pid for c in psutil.Process(proc.pid).children()}
        if len(children) < workers:
            raise TargetError(f"node: {len(children)} of {workers} workers:\n"
                              f"{target.log_tail()}")
        target.pids = {"master": [proc.pid], "workers": sorted(children)}
        yield target
    finally:
        stop_processes([proc], children, 15.0)


_HAPROXY = """\
global
    maxconn {maxconn}
defaults
    mode http
    maxconn {maxconn}
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
frontend socketio
    bind 127.0.0.1:{port}
    default_backend servers
backend servers
    balance roundrobin
    cookie SRV insert indirect nocache
{servers}
"""


def haproxy_config(port: int, server_urls: list[str], nofile: int) -> str:
    """HAProxy's config: HTTP mode, new sessions round robin, then sticky by its cookie.

    ``maxconn`` fits the open-file limit HAProxy inherits (two fds a
    connection, and some to spare), or it refuses to start.
    """
    lines = []
    for i, url in enumerate(server_urls):
        hostport = url.removeprefix("http://")
        lines.append(f"    server s{i} {hostport} cookie s{i}")
    maxconn = max(256, (nofile - 200) // 2)
    return _HAPROXY.format(port=port, servers="\n".join(lines), maxconn=maxconn)


@contextlib.contextmanager
def haproxy_stack(workers: int, *, log_dir: Path, redis_url: str, app: str = "bench_app",
                  timeout_s: float = 30.0) -> Iterator[Target]:
    binary = _program("haproxy")
    with standalone(workers, log_dir=log_dir, redis_url=redis_url, app=app) as servers:
        port = free_port()
        config = log_dir / f"haproxy-{port}.cfg"
        config.write_text(haproxy_config(port, servers.urls, nofile_limit()))
        log = log_dir / f"haproxy-{port}.log"
        proc = start_process([binary, "-db", "-f", str(config)], log_dir, log)
        target = Target("haproxy/redis", [f"http://127.0.0.1:{port}"],
                        log_paths=[log, *servers.log_paths])
        try:
            _wait_up(target, [proc], timeout_s)
            target.pids = {"haproxy": [proc.pid], "servers": servers.pids["servers"]}
            yield target
        finally:
            stop_processes([proc], set(), 10.0)
