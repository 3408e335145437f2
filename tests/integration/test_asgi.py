"""ASGI apps (FastAPI, Starlette, socketio.ASGIApp, plain callables) on a real cluster.

Each shape is started as users would type it (tests/apps/*.py), and reached
through the balancer by python-socketio's client, raw Engine.IO requests and
plain HTTP/WebSocket clients.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio

from balancer.sid import parse_sid
from tests.clients import disconnect
from tests.cluster import free_port, run_cli, start_cluster
from tests.eio import connect_and_upgrade, handshake, ws_call
from tests.integration.test_js_client import NODE_TIMEOUT_S, node_client
from tests.redis_server import RedisServer, redis_server_factory
from tests.waiting import eventually

__all__ = ["node_client", "redis_server_factory"]  # fixtures, shared

# (app spec, extra flags, Engine.IO path, one of the app's own routes)
SHAPES = [
    ("fastapi_wrapped:app", (), "/socket.io/", "/pid"),
    ("fastapi_mounted:app", (), "/ws/socket.io/", "/api/pid"),
    ("fastapi_mounted:create_app", (), "/ws/socket.io/", "/api/pid"),
    ("fastapi_mounted:build", ("--factory",), "/ws/socket.io/", "/api/pid"),
    ("starlette_app:app", (), "/rt/socket.io/", "/pid"),
    ("plain_asgi:app", (), "/socket.io/", "/anything"),
    ("fastapi_wrapped:sio", (), "/socket.io/", None),
]


async def _whoami_until_both(url: str, path: str, transports: list[str]) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    clients = []
    try:
        for _ in range(4):
            client = socketio.AsyncClient(reconnection=False)
            await client.connect(url, transports=transports, socketio_path=path,
                                 wait_timeout=10)
            clients.append(client)
            seen.append(await client.call("whoami", timeout=5))
            payload = {"text": "héllo ✓", "n": [1, None]}
            assert await client.call("echo", payload, timeout=5) == payload
            assert await client.call("echo", b"\x00\x01\xff", timeout=5) == b"\x00\x01\xff"
    finally:
        # Together: each polling client's disconnect waits out its long-poll.
        await asyncio.gather(*(disconnect(client) for client in clients))
    return seen


@pytest.mark.parametrize(("app", "flags", "path", "route"), SHAPES,
                         ids=[s[0] + "".join(s[1]) for s in SHAPES])
def test_shape_serves_socketio_and_its_routes(tmp_path: Path, app: str, flags: tuple[str, ...],
                                              path: str, route: str | None) -> None:
    with start_cluster(app, workers=2, tmp_path=tmp_path, args=flags) as cluster:
        pids = {w["pid"] for w in cluster.ready_workers()}

        async def main() -> None:
            for transports in (["polling", "websocket"], ["polling"]):
                seen = await _whoami_until_both(cluster.url, path, transports)
                assert {who["pid"] for who in seen} == pids, "sessions spread over both"
                for who in seen:
                    assert who["remote"] == "127.0.0.1", who
                    assert who["scope_client"][0] == "127.0.0.1", who
                    assert who["host"] == f"127.0.0.1:{cluster.port}", who
            if route is not None:
                async with aiohttp.ClientSession() as http, http.get(cluster.url + route) as r:
                    assert r.status == 200, await r.text()
                    assert (await r.json())["pid"] in pids

        asyncio.run(main())
        balancer = cluster.status()["balancer"]
        assert balancer["session_unknown_400"] == 0, balancer
        assert balancer["upstream_errors_502"] == 0, balancer
        assert balancer["handshakes"] >= 8, balancer
        assert "Traceback" not in cluster.log(), cluster.log()


@pytest.mark.parametrize("mode", ["handoff", "tunnel"])
def test_fastapi_routes_static_and_websocket_endpoint(tmp_path: Path, mode: str) -> None:
    config = '[balancer]\ntrusted_proxies = ["127.0.0.1"]\n'
    args = ("--websocket", mode)
    with start_cluster("fastapi_wrapped:app", workers=2, tmp_path=tmp_path, args=args) as plain, \
            start_cluster("fastapi_wrapped:app", workers=1, tmp_path=tmp_path, args=args,
                          config=config) as trusting:

        async def main() -> None:
            spoof = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
            async with aiohttp.ClientSession() as http:
                async with http.get(plain.url + "/pid", headers=spoof) as resp:
                    seen = await resp.json()
                assert seen["remote"] == "127.0.0.1" and seen["scheme"] == "http", seen
                assert seen["host"] == f"127.0.0.1:{plain.port}"
                async with http.get(trusting.url + "/pid", headers=spoof) as resp:
                    seen = await resp.json()
                assert seen["remote"] == "203.0.113.7", seen
                big = bytes(range(256)) * 8000
                async with http.post(plain.url + "/upload", data=big) as resp:
                    assert (await resp.json())["length"] == len(big)
                async with http.get(plain.url + "/static/hello.html") as resp:
                    assert resp.status == 200 and "static ok" in await resp.text()
                async with http.get(plain.url + "/nowhere") as resp:
                    assert resp.status == 404
                # The app's own WebSocket endpoint, handed off (or tunnelled) like Engine.IO's.
                for cluster, expected in ((plain, "127.0.0.1"), (trusting, "203.0.113.7")):
                    ws = await http.ws_connect(cluster.url.replace("http", "ws") + "/api/ws",
                                               headers=spoof)
                    for text in ("one", "dos ✓"):
                        await ws.send_str(text)
                        answer = json.loads((await ws.receive(timeout=10)).data)
                        assert answer["echo"] == text and answer["remote"] == expected, answer
                    await ws.send_str("bye")
                    await ws.close()
                # The Engine.IO WebSocket sees the same client (scope and environ).
                for cluster, expected in ((plain, "127.0.0.1"), (trusting, "203.0.113.7")):
                    client = socketio.AsyncClient(reconnection=False)
                    await client.connect(cluster.url, transports=["websocket"], headers=spoof)
                    who = await client.call("whoami", timeout=5)
                    assert who["remote"] == expected and who["scope_client"][0] == expected
                    await disconnect(client)

        asyncio.run(main())
        if mode == "handoff":
            assert plain.status()["balancer"]["handoffs"] >= 2


def _http_exchange(sock: socket.socket, request: bytes) -> bytes:
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += sock.recv(65536)
    return head


def test_upgrade_on_a_kept_alive_connection_is_passed_with_its_head(tmp_path: Path) -> None:
    """The proxy served /pid on this connection, so it read the upgrade's head itself."""
    with start_cluster("fastapi_wrapped:app", workers=2, tmp_path=tmp_path) as cluster:
        with socket.create_connection(("127.0.0.1", cluster.port), timeout=10) as sock:
            head = _http_exchange(sock, b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            head = _http_exchange(sock, b"GET /api/ws HTTP/1.1\r\nHost: x\r\n"
                                        b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                                        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                        b"Sec-WebSocket-Version: 13\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101"), head
            # A masked text frame "hi".
            mask = b"\x01\x02\x03\x04"
            sock.sendall(b"\x81\x82" + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(b"hi")))
            frame = sock.recv(65536)
            assert b'"echo":"hi"' in frame, frame
        assert cluster.status()["balancer"]["handoffs"] >= 1


def test_polling_clients_share_keepalive_connections(tmp_path: Path) -> None:
    with start_cluster("fastapi_mounted:app", workers=2, tmp_path=tmp_path) as cluster:

        async def main() -> None:
            # Four long-polls hold four connections; the fifth carries every POST of
            # every session, of both workers, and pooled connections pass between them.
            connector = aiohttp.TCPConnector(limit=5)
            async with aiohttp.ClientSession(connector=connector) as http:
                clients = [socketio.AsyncClient(reconnection=False, http_session=http)
                           for _ in range(4)]
                try:
                    for client in clients:
                        await client.connect(cluster.url, transports=["polling"],
                                             socketio_path="/ws/socket.io/", wait_timeout=10)
                    pids = set()
                    for round_ in range(3):
                        answers = await asyncio.gather(
                            *(c.call("echo", {"round": round_, "i": i}, timeout=10)
                              for i, c in enumerate(clients)))
                        assert answers == [{"round": round_, "i": i} for i in range(4)]
                        whos = await asyncio.gather(*(c.call("whoami", timeout=10)
                                                      for c in clients))
                        pids |= {w["pid"] for w in whos}
                    assert len(pids) == 2
                finally:
                    await asyncio.gather(*(disconnect(client) for client in clients))

        asyncio.run(main())
        assert cluster.status()["balancer"]["session_unknown_400"] == 0


def test_connect_storm_through_an_asgi_app(tmp_path: Path) -> None:
    from tests.integration.test_storm import SESSIONS, storm

    with start_cluster("fastapi_mounted:app", workers=2, tmp_path=tmp_path) as cluster:
        sockets, failures, pids = asyncio.run(storm(cluster.url, "/ws/socket.io/"))
        assert failures == [], failures[:5]
        assert len(sockets) == SESSIONS
        assert len(pids) == 2
        balancer = cluster.status()["balancer"]
        assert balancer["session_unknown_400"] == 0
        assert balancer["upstream_errors_502"] == 0


def _markers(directory: Path) -> dict[int, list[str]]:
    return {int(p.name): p.read_text().split() for p in directory.iterdir()}


@pytest.mark.parametrize("app", ["fastapi_wrapped:app", "fastapi_mounted:app"])
def test_lifespan_runs_once_per_worker(tmp_path: Path, app: str) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    with start_cluster(app, workers=2, tmp_path=tmp_path, env={"MARK_DIR": str(marks)}) as cluster:
        pids = {w["pid"] for w in cluster.ready_workers()}
        # Startup ran before ready: the markers are there already.
        assert _markers(marks) == {pid: ["start"] for pid in pids}
        code, _ = cluster.admin("/reload", method="POST")
        assert code in (200, 202)
        cluster.wait_ready(2, exclude_pids=pids)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(
                _markers(marks).get(pid) != ["start", "stop"] for pid in pids):
            time.sleep(0.1)
        new = {w["pid"] for w in cluster.ready_workers()} - pids
        assert cluster.stop() == 0
    got = _markers(marks)
    assert set(got) == pids | new, got
    assert all(events == ["start", "stop"] for events in got.values()), got


def test_lifespan_startup_failure_is_a_boot_failure(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    started = time.monotonic()
    result = run_cli("run", "lifespan_fail:app", "--workers", "2", "--port", str(free_port()),
                     "--admin-port", str(free_port()), env={"MARK_DIR": str(marks)})
    assert result.returncode == 3, result.stderr
    assert "database unreachable at startup" in result.stderr, result.stderr
    assert "Traceback" in result.stderr and "lifespan" in result.stderr, result.stderr
    assert result.stderr.count("restarting") == 0
    attempts = sum(len(events) for events in _markers(marks).values())
    assert 1 <= attempts <= 2, _markers(marks)  # once per worker slot, no respawn loop
    assert time.monotonic() - started < 25


def test_ambiguous_callable_names_the_factory_flag() -> None:
    result = run_cli("run", "fastapi_mounted:build", "--workers", "1", "--port",
                     str(free_port()), "--admin-port", str(free_port()))
    assert result.returncode == 3, result.stderr
    assert "--factory" in result.stderr, result.stderr
    assert "TypeError" not in result.stderr, result.stderr


def test_asgi_app_without_socketio_is_a_clear_error() -> None:
    result = run_cli("run", "fastapi_wrapped:api", "--workers", "1", "--port",
                     str(free_port()), "--admin-port", str(free_port()))
    assert result.returncode == 3, result.stderr
    assert "no socketio.ASGIApp in it" in result.stderr, result.stderr


def test_raw_sids_route_by_the_mounted_path(tmp_path: Path) -> None:
    with start_cluster("starlette_app:app", workers=2, tmp_path=tmp_path) as cluster:

        async def main() -> None:
            async with aiohttp.ClientSession() as http:
                slots = set()
                for _ in range(4):
                    info = await handshake(http, cluster.url, "/rt/socket.io/")
                    slots.add(parse_sid(info["sid"]).slot)  # type: ignore[union-attr]
                assert slots == {0, 1}
                _sid, ws = await connect_and_upgrade(http, cluster.url, "/rt/socket.io/")
                payload = {"text": "x" * 200_000}
                assert await ws_call(ws, "echo", payload) == payload
                await ws.close()

        asyncio.run(main())



# The official JavaScript client (socket.io-client on Node, tests/js/client.mjs).

JS_CLIENTS = 8


def _node(node_client: list[str], *args: str) -> dict[str, Any]:
    done = subprocess.run([*node_client, *args], capture_output=True, text=True,
                          timeout=NODE_TIMEOUT_S, check=False)
    assert done.returncode == 0, f"node failed:\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.parametrize(("app", "path", "mode", "adapter"), [
    ("fastapi_wrapped:app", "/socket.io/", "handoff", "local"),
    ("fastapi_mounted:app", "/ws/socket.io/", "handoff", "redis"),
    ("fastapi_mounted:app", "/ws/socket.io/", "tunnel", "local"),
    ("fastapi_wrapped:app", "/socket.io/", "handoff", "amqp"),
])
def test_official_js_client(tmp_path: Path, node_client: list[str], app: str, path: str,
                            mode: str, adapter: str, request: pytest.FixtureRequest,
                            redis_server_factory: Callable[[], RedisServer]) -> None:
    args: tuple[str, ...] = ("--websocket", mode, "--adapter", adapter)
    env: dict[str, str] = {}
    if adapter == "redis":
        args += ("--redis-url", redis_server_factory().url)
    if adapter == "amqp":
        env["SIOCLUSTER_ADAPTER_AMQP_URL"] = request.getfixturevalue("rabbitmq_server").url
        env["SIOCLUSTER_ADAPTER_CHANNEL"] = f"asgi-{os.getpid()}"
    with start_cluster(app, workers=2, tmp_path=tmp_path, args=args, env=env) as cluster:
        pids = sorted(w["pid"] for w in cluster.ready_workers())
        results = _node(node_client, "sessions", cluster.url, "--clients", str(JS_CLIENTS),
                        "--path", path)
        for js_mode, transport in (("default", "websocket"), ("polling", "polling")):
            result = results[js_mode]
            assert result["errors"] == [], f"{js_mode}: {result['errors']}"
            assert result["connected"] == JS_CLIENTS, result
            # Unicode and binary payloads, several arguments: every ack came back intact.
            assert result["acks"] == result["acks_expected"], result
            assert result["pids"] == pids, f"{js_mode}: sessions should spread over both"
            assert result["transports"] == {transport: JS_CLIENTS}, result
        shout = _node(node_client, "broadcast", cluster.url, "--clients", str(JS_CLIENTS),
                      "--path", path)
        assert shout["errors"] == [], shout
        assert shout["pids"] == pids, "the listeners should be on both workers"
        assert shout["received"] == JS_CLIENTS, shout
        balancer = cluster.status()["balancer"]
        assert balancer["session_unknown_400"] == 0, balancer
        assert balancer["upstream_errors_502"] == 0, balancer


def test_counters_metrics_and_malformed_input(tmp_path: Path) -> None:
    """Heartbeat counters, /metrics and the log filter work the same for ASGI apps."""
    with start_cluster("fastapi_wrapped:app", workers=2, tmp_path=tmp_path) as cluster:

        async def main() -> None:
            async with aiohttp.ClientSession() as http:
                _sid, ws = await connect_and_upgrade(http, cluster.url)
                for i in range(5):
                    assert await ws_call(ws, "echo", i, ack_id=i + 1) == i
                for garbage in ('42["echo", {broken', '42{"not": "a list"', "42[]"):
                    await ws.send_str(garbage)
                await asyncio.sleep(0.3)
                await ws.close()

        asyncio.run(main())
        # (a heartbeat carries the counters)
        eventually(lambda: sum(w["guards"].get("malformed_input", 0)
                               for w in cluster.status()["workers"]),
                   what="a malformed_input count in /status")
        with urllib.request.urlopen(cluster.admin_url + "/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
        received = [float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                    if line.startswith("siocluster_messages_received_total{")]
        assert sum(received) >= 5, metrics
        log = cluster.log()
        assert "malformed input from a client" in log, log
        assert "Traceback" not in log, log
