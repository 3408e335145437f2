"""A throwaway redis-server on a free loopback port, for the fan-out baselines.

Reuses the test suite's helper (:mod:`tests.redis_server`) when it can be
imported; otherwise starts ``redis-server`` from PATH itself, with the same
flags (no persistence, loopback only).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

from .targets import free_port

__all__ = ["redis_server"]


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def _own_redis(binary: str) -> Iterator[str]:
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="siocluster-bench-redis-")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", workdir, "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10.0
        while not _ping(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(5.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5.0)
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """Yield the URL of a fresh redis-server; raise RuntimeError when there is none."""
    try:
        from tests.redis_server import RedisServer, find_redis_server
    except ImportError:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH") from None
        with _own_redis(binary) as url:
            yield url
        return
    found = find_redis_server(install=False)
    if found is None:
        raise RuntimeError("redis-server is not installed")
    server = RedisServer(found)
    server.start()
    try:
        yield server.url
    finally:
        server.cleanup()
