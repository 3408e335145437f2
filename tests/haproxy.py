"""A real HAProxy in front of the cluster, speaking the PROXY protocol to it.

:func:`haproxy_front` starts ``haproxy`` (found or installed by
:mod:`tests.system`) in TCP mode with two frontends on free ports: one whose
server line says ``send-proxy`` (v1) and one ``send-proxy-v2``, both pointing
at the cluster's public port.  Tests are skipped when no haproxy can be had.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.cluster import free_port
from tests.system import find_program, missing

__all__ = ["haproxy_front", "haproxy_round_robin"]

_CONFIG = """\
global
    maxconn 2000
defaults
    mode tcp
    timeout connect 5s
    timeout client 120s
    timeout server 120s
frontend v1
    bind 127.0.0.1:{v1}
    default_backend cluster_v1
frontend v2
    bind 127.0.0.1:{v2}
    default_backend cluster_v2
backend cluster_v1
    server s1 127.0.0.1:{target} send-proxy
backend cluster_v2
    server s1 127.0.0.1:{target} send-proxy-v2
"""


_ROUND_ROBIN = """\
global
    maxconn 4000
defaults
    mode tcp
    timeout connect 5s
    timeout client 120s
    timeout server 120s
frontend front
    bind 127.0.0.1:{port}
    default_backend hosts
backend hosts
    # As an operator would run it: health checks take a dead host out within a
    # second, and a connection refused by one is retried on another.
    balance roundrobin
    option redispatch
    retries 2
{servers}
"""


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@contextmanager
def _haproxy(config_text: str, ports: list[int], workdir: Path, name: str) -> Iterator[None]:
    """Run haproxy with ``config_text`` until it listens on every one of ``ports``."""
    binary = find_program("haproxy", "haproxy")
    if binary is None:
        missing("haproxy is not installed and cannot be installed")
    config = workdir / f"haproxy-{name}.cfg"
    config.write_text(config_text)
    log = (workdir / f"haproxy-{name}.log").open("w")
    proc = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while not all(_listening(port) for port in ports):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"haproxy did not start: see {log.name}")
            time.sleep(0.05)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


@contextmanager
def haproxy_front(target_port: int, workdir: Path) -> Iterator[tuple[int, int]]:
    """HAProxy's (v1 port, v2 port), both relaying to ``target_port``."""
    v1, v2 = free_port(), free_port()
    with _haproxy(_CONFIG.format(v1=v1, v2=v2, target=target_port), [v1, v2], workdir,
                  str(v1)):
        yield v1, v2


@contextmanager
def haproxy_round_robin(ports: list[int], workdir: Path) -> Iterator[int]:
    """HAProxy's port, spreading TCP connections round-robin over ``ports``, no stickiness."""
    port = free_port()
    servers = "\n".join(f"    server h{i} 127.0.0.1:{p} check inter 500ms fall 1 rise 2"
                        for i, p in enumerate(ports))
    with _haproxy(_ROUND_ROBIN.format(port=port, servers=servers), [port], workdir,
                  f"rr-{port}"):
        yield port
