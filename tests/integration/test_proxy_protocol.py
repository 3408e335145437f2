"""``[balancer] proxy_protocol``: behind a real HAProxy, and refusals without it."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
from pathlib import Path

import aiohttp
import pytest
import socketio

from tests.clients import disconnect, raw_exchange
from tests.cluster import Cluster, start_cluster
from tests.haproxy import haproxy_front

PROXY_ON = {"SIOCLUSTER_BALANCER_PROXY_PROTOCOL": "true",
            "SIOCLUSTER_LIMITS_HEADER_TIMEOUT_S": "1"}
GET_PID = b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n"
# Clients bind this loopback address, so the client HAProxy names is not its own.
CLIENT = "127.0.0.2"


def _v2(command: int, family: int = 0x11, addresses: bytes = b"") -> bytes:
    return (b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x20 | command, family])
            + struct.pack(">H", len(addresses)) + addresses)


async def _through(port: int) -> None:
    """Plain HTTP and every Socket.IO transport, through one HAProxy frontend."""
    connector = aiohttp.TCPConnector(local_addr=(CLIENT, 0))
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.get(f"http://127.0.0.1:{port}/pid") as r:
            assert (await r.json())["remote"] == CLIENT
        for transports in (["polling"], ["polling", "websocket"], ["websocket"]):
            client = socketio.AsyncClient(reconnection=False, http_session=http)
            await client.connect(f"http://127.0.0.1:{port}", transports=transports,
                                 wait_timeout=10)
            me = await client.call("whoami", timeout=5)
            assert me["remote"] == CLIENT, (transports, me)
            assert (await client.call("echo", "hi", timeout=5)) == "hi"
            await disconnect(client)


def _remote(answer: bytes) -> str:
    """The "remote" the app's /pid saw (aiohttp and FastAPI format JSON differently)."""
    return str(json.loads(answer.partition(b"\r\n\r\n")[2])["remote"])


def _refusals(cluster: Cluster) -> None:
    # No header at all: a clear 400, never a guess.
    answer = raw_exchange(cluster.port, GET_PID)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:80]
    assert b"no proxy protocol header" in answer
    # A malformed v1 line, and a v2 header for UDP.
    bad = raw_exchange(cluster.port, b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n" + GET_PID)
    assert bad.startswith(b"HTTP/1.1 400") and b"bad v1 address" in bad, bad[:120]
    udp = raw_exchange(cluster.port, _v2(1, 0x12, bytes(12)) + GET_PID)
    assert udp.startswith(b"HTTP/1.1 400"), udp[:80]
    # v2 LOCAL (the proxy's own health check): the TCP peer stays the client.
    local = raw_exchange(cluster.port, _v2(0) + GET_PID)
    assert local.startswith(b"HTTP/1.1 200") and _remote(local) == "127.0.0.1", local
    # v1 by hand, with the request in the same segment.
    v1 = raw_exchange(cluster.port, b"PROXY TCP4 198.51.100.7 127.0.0.1 4711 80\r\n" + GET_PID)
    assert _remote(v1) == "198.51.100.7", v1
    # A header trickled past header_timeout_s: 408, like a slow request head.
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", cluster.port), timeout=10) as s:
        s.sendall(b"PROXY TCP4 ")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 5, data


@pytest.mark.parametrize(("app", "websocket"), [
    ("echo_app:app", "handoff"),
    ("echo_app:app", "tunnel"),
    ("fastapi_wrapped:app", "handoff"),
])
def test_proxy_protocol_behind_haproxy(tmp_path: Path, app: str, websocket: str) -> None:
    env = {**PROXY_ON, "SIOCLUSTER_BALANCER_WEBSOCKET": websocket}
    with start_cluster(app, workers=2, tmp_path=tmp_path, env=env) as cluster, \
            haproxy_front(cluster.port, tmp_path) as (v1, v2):
        for port in (v1, v2):
            asyncio.run(_through(port))
        _refusals(cluster)
        balancer = cluster.status()["balancer"]
        assert balancer["proxy_protocol_errors_400"] >= 3
        assert cluster.proc.poll() is None
        code, _ = cluster.admin("/health")
        assert code == 200
        asyncio.run(_through(v2))  # still serving through the proxy


def test_proxy_protocol_only_from_trusted_proxies(tmp_path: Path) -> None:
    env = {**PROXY_ON, "SIOCLUSTER_BALANCER_TRUSTED_PROXIES": "10.1.2.3"}
    with start_cluster(workers=1, tmp_path=tmp_path, env=env) as cluster:
        answer = raw_exchange(cluster.port, b"PROXY TCP4 198.51.100.7 127.0.0.1 1 80\r\n"
                              + GET_PID)
        assert answer.startswith(b"HTTP/1.1 400") and b"not in trusted_proxies" in answer
        assert cluster.status()["balancer"]["proxy_protocol_errors_400"] == 1
