"""A real rabbitmq-server for tests: one broker per test session, on free ports.

``tests/conftest.py`` provides the fixture to every test module::

    def test_something(rabbitmq_server):     # a RabbitMQServer
        ... rabbitmq_server.url ...
        rabbitmq_server.kill()               # SIGKILL: a crash
        rabbitmq_server.start()              # same ports, same data dir

Debian's broker drops privileges to the ``rabbitmq`` user, so its directory
belongs to that user; its node name, AMQP and distribution ports, mnesia,
log, config, plugins and feature-flags files all live in one temp dir, so it
shares nothing with any other broker on the machine.  Ready takes 10-15 s.
The shell wrapper does not stop the broker: :meth:`stop` stops the
``beam.smp`` of this node by its pid, then this node's ``epmd``.  Skipped when
no rabbitmq-server can be had, except under ``CI=true``, where that fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system import find_program

__all__ = ["RabbitMQServer", "rabbitmq_server"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return out
    for kid in kids:
        out.append(int(kid))
        out.extend(_children(int(kid)))
    return out


def _ours(pid: int, node: str) -> bool:
    """Whether ``pid`` was started for ``node`` (epmd daemonizes out of our tree)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"RABBITMQ_NODENAME={node}".encode() in environ


def _epmds(node: str) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _comm(int(entry.name)) == "epmd" and _ours(int(entry.name),
                                                                               node):
            out.append(int(entry.name))
    return out


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


class RabbitMQServer:
    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = _free_port()
        self.dist_port = _free_port()
        self.epmd_port = _free_port()
        self.dir = tempfile.mkdtemp(prefix="siocluster-rabbitmq-")
        self.node = f"sioc{self.port}@localhost"
        self.proc: subprocess.Popen[bytes] | None = None
        self.pids: set[int] = set()  # beam.smp, epmd ... of this node
        d = Path(self.dir)
        (d / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            "loopback_users = none\n"
            "log.console = false\nlog.file.level = warning\n"
        )
        (d / "enabled_plugins").write_text("[].\n")
        for sub in ("mnesia", "log", "home"):
            (d / sub).mkdir()
        os.chmod(self.dir, 0o755)
        subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", self.dir], check=False)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def _env(self) -> dict[str, str]:
        d = self.dir
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_MNESIA_BASE": f"{d}/mnesia",
            "RABBITMQ_FEATURE_FLAGS_FILE": f"{d}/feature_flags",
            "RABBITMQ_LOG_BASE": f"{d}/log",
            "RABBITMQ_CONFIG_FILES": f"{d}/rabbitmq.conf",
            "RABBITMQ_CONFIG_FILE": f"{d}/rabbitmq",
            "RABBITMQ_ENABLED_PLUGINS_FILE": f"{d}/enabled_plugins",
            "RABBITMQ_PID_FILE": f"{d}/pid",
            "HOME": f"{d}/home",
        }

    def _ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"AMQP\x00\x00\x09\x01")
                return sock.recv(1) == b"\x01"  # a Connection.Start frame
        except OSError:
            return False

    def start(self, timeout_s: float = 60.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        self.proc = subprocess.Popen(
            [self.binary], env=self._env(), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.pids.update(_children(self.proc.pid))
            if self._ready():
                self.pids.update(_children(self.proc.pid))
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        log = ""
        with contextlib.suppress(OSError):
            log = "\n".join(p.read_text()[-2000:] for p in Path(self.dir, "log").glob("*.log"))
        self.stop()
        raise RuntimeError(f"rabbitmq-server did not start on port {self.port}:\n{log}")

    def _beams(self) -> list[int]:
        if self.proc is None:
            return []
        return [p for p in _children(self.proc.pid) if _comm(p).startswith("beam")]

    def kill(self) -> None:
        """SIGKILL the broker (beam.smp): a crash."""
        for pid in self._beams():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._reap()

    def stop(self) -> None:
        """Stop this node's beam.smp by its pid, then the rest of its tree (epmd)."""
        for pid in self._beams():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        self._reap(grace_s=10.0)

    def _reap(self, grace_s: float = 5.0) -> None:
        if self.proc is not None:
            self.pids.update(_children(self.proc.pid))
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace_s)
        # Only processes of this node (its name is in their environment).
        for pid in sorted(self.pids | set(_epmds(self.node))):
            if _ours(pid, self.node):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None
        self.pids.clear()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def rabbitmq_server() -> Iterator[RabbitMQServer]:
    binary = find_program("rabbitmq-server", "rabbitmq-server")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("rabbitmq-server is required under CI=true and could not be installed")
        pytest.skip("rabbitmq-server is not installed and cannot be installed")
    server = RabbitMQServer(binary)
    server.start()
    try:
        yield server
    finally:
        server.cleanup()
