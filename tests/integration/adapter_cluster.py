"""Start N ``adapter_app.py`` worker processes and drive them, for the adapter tests.

No mocks: real processes, real sockets, python-socketio clients pinned to a
worker by its TCP port, and ops sent to a worker over HTTP (``POST /op``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp
import socketio

from tests.waiting import eventually_async

__all__ = ["Client", "Cluster", "Worker", "wait_for"]

APP = Path(__file__).with_name("adapter_app.py")
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Worker:
    def __init__(self, cluster: Cluster, slot: int, generation: int = 1) -> None:
        self.cluster = cluster
        self.slot = slot
        self.generation = generation
        self.port = _free_port()
        self.proc: subprocess.Popen[str] | None = None
        self.node = ""

    def spawn(self) -> None:
        c = self.cluster
        cmd = [
            sys.executable, str(APP), "--slot", str(self.slot),
            "--generation", str(self.generation), "--port", str(self.port),
            "--runtime-dir", c.runtime_dir, "--backend", c.backend,
            "--redis-url", c.redis_url, "--amqp-url", c.amqp_url,
            "--heartbeat", str(c.heartbeat),
            "--request-timeout", str(c.request_timeout), *c.extra,
        ]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=sys.stderr, text=True, env=env
        )

    def wait_ready(self, timeout_s: float = 20.0) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("READY"):
                self.node = line.split()[1]
                return
            if not line and self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.slot} exited with {self.proc.returncode}")
        raise RuntimeError(f"worker {self.slot} not ready after {timeout_s}s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class Cluster:
    def __init__(
        self, backend: str, size: int, *, redis_url: str = "redis://127.0.0.1:1/0",
        heartbeat: float = 0.2, request_timeout: float = 3.0, extra: tuple[str, ...] = (),
        amqp_url: str = "amqp://guest:guest@127.0.0.1:1/",
    ) -> None:
        self.backend = backend
        self.redis_url = redis_url
        self.amqp_url = amqp_url
        self.heartbeat = heartbeat
        self.request_timeout = request_timeout
        self.extra = extra
        self.runtime_dir = tempfile.mkdtemp(prefix="sioc-adapter-")
        os.chmod(self.runtime_dir, 0o700)
        self.workers = [Worker(self, slot) for slot in range(size)]

    def start(self) -> None:
        for worker in self.workers:
            worker.spawn()
        for worker in self.workers:
            worker.wait_ready()

    def restart(self, slot: int) -> Worker:
        """Replace a (dead) worker with a fresh generation on the same slot."""
        old = self.workers[slot]
        old.kill()
        new = Worker(self, slot, old.generation + 1)
        new.spawn()
        new.wait_ready()
        self.workers[slot] = new
        return new

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()

    def url(self, slot: int) -> str:
        return f"http://127.0.0.1:{self.workers[slot].port}"

    async def op(self, slot: int, kind: str, **fields: Any) -> Any:
        async with aiohttp.ClientSession() as session, session.post(
            f"{self.url(slot)}/op", json={"kind": kind, **fields},
            timeout=aiohttp.ClientTimeout(total=30),
        ) as resp:
            resp.raise_for_status()
            return (await resp.json())["result"]

    async def wait_mesh(self, timeout_s: float = 10.0) -> None:
        """Until every worker counts every other as alive."""
        size = len(self.workers)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            counts = [await self.op(w.slot, "server_count") for w in self.workers]
            if all(c == size for c in counts):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"mesh incomplete: {counts}")

    async def client(
        self, slot: int, *, auth: Any = None, namespaces: list[str] | None = None
    ) -> Client:
        client = Client(slot)
        await client.connect(self.url(slot), auth=auth, namespaces=namespaces)
        return client


class Client:
    """A python-socketio client that records every event it gets, per namespace."""

    def __init__(self, slot: int) -> None:
        self.slot = slot
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: dict[tuple[str, str], list[Any]] = defaultdict(list)
        self.disconnected = asyncio.Event()

        @self.sio.on("*", namespace="*")
        async def any_event(event: str, namespace: str, *args: Any) -> None:
            self.events[(namespace, event)].append(args[0] if len(args) == 1 else list(args))

        @self.sio.on("ask", namespace="*")
        async def ask(namespace: str, value: Any) -> Any:
            return {"answer": value, "slot": self.slot}

        # Only "*" handlers: a handler on "/" would hide the catch-alls for "/".
        @self.sio.on("disconnect", namespace="*")
        async def on_disconnect(namespace: str, *args: Any) -> None:
            if namespace == "/":
                self.disconnected.set()

    async def connect(
        self, url: str, *, auth: Any = None, namespaces: list[str] | None = None
    ) -> None:
        await self.sio.connect(url, transports=["websocket"], auth=auth,
                               namespaces=namespaces or ["/"], wait_timeout=10)

    def sid(self, namespace: str = "/") -> str:
        sid = self.sio.get_sid(namespace)
        assert sid is not None
        return sid

    def got(self, event: str, namespace: str = "/") -> list[Any]:
        return self.events[(namespace, event)]

    async def close(self) -> None:
        await self.sio.disconnect()


async def wait_for(predicate: Any, timeout_s: float = 5.0, interval_s: float = 0.02) -> None:
    await eventually_async(predicate, timeout_s, interval_s)
