"""A real redis-server for tests: find (or install) it, start it on a free port, stop it.

Usage from a test module::

    from tests.redis_server import redis_server_factory, redis_server_fixture

    redis_server = redis_server_fixture(scope="module")

    def test_something(redis_server):        # a RedisServer
        ... redis_server.url ...
        redis_server.kill()                  # SIGKILL: a crash, as in an outage
        redis_server.start()                 # same port, same URL, empty data

:func:`find_redis_server` finds or installs it (:mod:`tests.system`).
:class:`RedisServer` runs it with ``--save '' --appendonly no`` in a private
temp dir.  Tests are skipped, not
failed, when no redis-server can be had.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.system import find_program, missing

__all__ = [
    "RedisServer",
    "find_redis_server",
    "free_port",
    "redis_server_factory",
    "redis_server_fixture",
]

def find_redis_server(*, install: bool = True) -> str | None:
    """Path of a redis-server binary, installing it with apt when root and allowed."""
    return find_program("redis-server", "redis-server", install=install)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process on a fixed port; restartable on the same port."""

    def __init__(self, binary: str, port: int | None = None) -> None:
        self.binary = binary
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="siocluster-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        self.proc = subprocess.Popen(
            [
                self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", self.dir,
                "--daemonize", "no", "--loglevel", "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            if _ping(self.port):
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def kill(self) -> None:
        """SIGKILL, as a crash: no goodbye to the clients."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=5)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server_factory() -> Iterator[Callable[..., RedisServer]]:
    """A factory of started servers, all stopped at the end of the session."""
    binary = find_redis_server()
    if binary is None:
        missing("redis-server is not installed and cannot be installed")
    servers: list[RedisServer] = []

    def make(port: int | None = None) -> RedisServer:
        assert binary is not None
        server = RedisServer(binary, port)
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.cleanup()


def redis_server_fixture(scope: Any = "function") -> Any:
    """Build a ``redis_server`` fixture of the given scope (assign it at module level)."""

    @pytest.fixture(scope=scope)
    def redis_server() -> Iterator[RedisServer]:
        binary = find_redis_server()
        if binary is None:
            missing("redis-server is not installed and cannot be installed")
        server = RedisServer(binary)
        server.start()
        try:
            yield server
        finally:
            server.cleanup()

    return redis_server
