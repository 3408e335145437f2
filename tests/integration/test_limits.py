"""Balancer limits against a live cluster: each refusal, then a client that still works."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import socketio

from tests.clients import disconnect, raw_exchange, still_serving
from tests.cluster import start_cluster
from tests.eio import connect_and_upgrade, handshake, poll, post


def test_handshake_rate_per_ip(tmp_path: Path) -> None:
    env = {"SIOCLUSTER_LIMITS_HANDSHAKE_RATE_PER_IP": "2"}
    with start_cluster(workers=2, tmp_path=tmp_path, env=env) as cluster:

        async def main() -> None:
            async with aiohttp.ClientSession() as http:
                first = await handshake(http, cluster.url)
                statuses = []
                retry_after = None
                for _ in range(6):
                    async with http.get(cluster.url + "/socket.io/?EIO=4&transport=polling") as r:
                        statuses.append(r.status)
                        if r.status == 429:
                            retry_after = r.headers["Retry-After"]
                assert statuses.count(200) == 3 and 429 in statuses, statuses
                assert retry_after is not None and int(retry_after) >= 1
                # A request with a valid sid is never throttled.
                sid = first["sid"]
                assert await post(http, cluster.url, sid, "40") == 200
                status, text = await poll(http, cluster.url, sid)
                assert status == 200 and text.startswith("40")
                await asyncio.sleep(float(retry_after))

        asyncio.run(main())
        still_serving(cluster)
        assert cluster.status()["balancer"]["rate_limited_429"] >= 1


@pytest.mark.parametrize("app", ["echo_app:app", "fastapi_wrapped:app"])
def test_oversize_bodies_and_messages(tmp_path: Path, app: str) -> None:
    env = {"SIOCLUSTER_LIMITS_MAX_MESSAGE_BYTES": "10000"}
    with start_cluster(app, workers=2, tmp_path=tmp_path, env=env) as cluster:

        async def main() -> None:
            async with aiohttp.ClientSession() as http:
                sid = (await handshake(http, cluster.url))["sid"]
                big = "42" + json.dumps(["echo", "x" * 20_000])
                assert await post(http, cluster.url, sid, big) == 413
                _sid, ws = await connect_and_upgrade(http, cluster.url)
                await ws.send_str(big)
                msg = await ws.receive(timeout=10)
                while msg.type == aiohttp.WSMsgType.TEXT:  # a ping may come first
                    msg = await ws.receive(timeout=10)
                assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), msg
                if msg.type == aiohttp.WSMsgType.CLOSE:
                    assert msg.data == 1009  # message too big

        asyncio.run(main())
        still_serving(cluster)


def test_smuggling_and_bad_framing_get_400(tmp_path: Path) -> None:
    with start_cluster(workers=1, tmp_path=tmp_path) as cluster:
        both = raw_exchange(cluster.port, b"POST /upload HTTP/1.1\r\nHost: x\r\n"
                            b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"0\r\n\r\nGET /pid HTTP/1.1\r\n\r\n")
        assert both[9:12] == b"400", both[:80]
        bad_chunk = raw_exchange(cluster.port, b"POST /upload HTTP/1.1\r\nHost: x\r\n"
                                 b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n")
        assert bad_chunk[9:12] == b"400", bad_chunk[:80]
        huge = raw_exchange(cluster.port, b"GET /pid HTTP/1.1\r\nHost: x\r\nX-Big: "
                            + b"a" * 40_000 + b"\r\n\r\n")
        assert huge[9:10] == b"4", huge[:80]
        many = b"".join(f"X-H{i}: v\r\n".encode() for i in range(500))
        too_many = raw_exchange(cluster.port, b"GET /pid HTTP/1.1\r\nHost: x\r\n" + many
                                + b"\r\n")
        assert too_many[9:10] == b"4", too_many[:80]
        assert cluster.proc.poll() is None
        still_serving(cluster)


def test_slowloris_head_gets_408(tmp_path: Path) -> None:
    env = {"SIOCLUSTER_LIMITS_HEADER_TIMEOUT_S": "1"}
    with start_cluster(workers=1, tmp_path=tmp_path, env=env) as cluster:
        slow = []
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", cluster.port), timeout=5)
            s.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n")
            slow.append(s)
        started = time.monotonic()
        still_serving(cluster)  # others are served meanwhile
        for s in slow:
            s.sendall(b"X-Slow: 1\r\n")  # trickling, never finishing
        answers = []
        for s in slow:
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            answers.append(data)
            s.close()
        elapsed = time.monotonic() - started
        assert all(a.startswith(b"HTTP/1.1 408") for a in answers), answers[0]
        assert elapsed < 4, elapsed
        assert cluster.status()["balancer"]["head_timeouts_408"] == 20


def test_a_connection_that_sends_nothing_gets_408(tmp_path: Path) -> None:
    """The listener defers accepting until data arrives (TCP_DEFER_ACCEPT, 1 s); a
    client that never sends is accepted after that second, then timed as usual."""
    env = {"SIOCLUSTER_LIMITS_HEADER_TIMEOUT_S": "1"}
    with start_cluster(workers=1, tmp_path=tmp_path, env=env) as cluster:
        with socket.create_connection(("127.0.0.1", cluster.port), timeout=10) as s:
            started = time.monotonic()
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
            elapsed = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert 1 <= elapsed < 6, elapsed
        assert cluster.status()["balancer"]["head_timeouts_408"] == 1


@contextlib.contextmanager
def _kept_alive(port: int, first: bytes = b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n"
                ) -> Iterator[socket.socket]:
    """A connection that has had one whole request answered, kept alive."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(first)
        answer = b""
        while b"}" not in answer:
            answer += s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 200"), answer
        yield s


CHUNKED_UPLOAD = (b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"5\r\nhello\r\n0\r\n\r\n")


@pytest.mark.parametrize("first", [b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n", CHUNKED_UPLOAD],
                         ids=["after-get", "after-chunked-body"])
def test_slowloris_on_a_keepalive_connection_gets_408(tmp_path: Path, first: bytes) -> None:
    env = {"SIOCLUSTER_LIMITS_HEADER_TIMEOUT_S": "1"}
    with start_cluster(workers=1, tmp_path=tmp_path, env=env) as cluster:
        with _kept_alive(cluster.port, first) as s:
            started = time.monotonic()
            answer = b""
            try:
                for byte in b"GET /pid HTTP/1.1\r\nHost: x\r\n":
                    s.sendall(bytes([byte]))
                    time.sleep(0.2)
            except (BrokenPipeError, ConnectionResetError):
                pass
            try:
                while chunk := s.recv(4096):
                    answer += chunk
            except ConnectionResetError:
                pass
        assert answer.startswith(b"HTTP/1.1 408"), answer[:60]
        assert time.monotonic() - started < 5
        still_serving(cluster)


@pytest.mark.parametrize("app", ["echo_app:app", "fastapi_wrapped:app"])
def test_max_sessions_per_ip(tmp_path: Path, app: str) -> None:
    """The cap counts sessions on every worker, by the client the balancer resolved."""
    env = {"SIOCLUSTER_LIMITS_MAX_SESSIONS_PER_IP": "3",
           "SIOCLUSTER_BALANCER_TRUSTED_PROXIES": "127.0.0.1"}
    capped = {"X-Forwarded-For": "203.0.113.5"}
    other = {"X-Forwarded-For": "203.0.113.6"}
    with start_cluster(app, workers=2, tmp_path=tmp_path, env=env) as cluster:

        async def main() -> None:
            clients = []
            for transports in (["polling", "websocket"], ["websocket"], ["polling"]):
                c = socketio.AsyncClient(reconnection=False)
                await c.connect(cluster.url, headers=capped, transports=transports,
                                wait_timeout=10)
                clients.append(c)
            seen = [await c.call("whoami", timeout=5) for c in clients]
            assert {s["remote"] for s in seen} == {"203.0.113.5"}
            assert len({s["pid"] for s in seen}) == 2  # on both workers, counted together
            async with aiohttp.ClientSession() as http:
                url = cluster.url + "/socket.io/?EIO=4&transport=polling"
                async with http.get(url, headers=capped) as r:
                    assert r.status == 429, r.status
                    assert "3 sessions" in (await r.json())["message"]
                    assert r.headers["Retry-After"] == "1"
                # A new session over a WebSocket alone is refused the same way.
                ws_url = cluster.url + "/socket.io/?EIO=4&transport=websocket"
                try:
                    async with http.ws_connect(ws_url, headers=capped):
                        raise AssertionError("websocket handshake past the cap was accepted")
                except aiohttp.WSServerHandshakeError as exc:
                    assert exc.status == 429
                # Another address is not affected, and sessions keep working.
                async with http.get(url, headers=other) as r:
                    assert r.status == 200 and (await r.text()).startswith("0")
            assert (await clients[1].call("echo", "ok", timeout=5)) == "ok"
            # Once a session ends, the address may open another (after the next report).
            await disconnect(clients.pop())
            deadline = time.monotonic() + 10
            while True:
                c = socketio.AsyncClient(reconnection=False)
                try:
                    await c.connect(cluster.url, headers=capped, wait_timeout=10)
                    break
                except socketio.exceptions.ConnectionError:
                    assert time.monotonic() < deadline, "the freed session never counted"
                    await asyncio.sleep(0.3)
            clients.append(c)
            for c in clients:
                await disconnect(c)

        asyncio.run(main())
        assert cluster.status()["balancer"]["session_limited_429"] >= 2
        still_serving(cluster)


def _server_timers(port: int) -> list[tuple[int, float]]:
    """(timer kind, seconds left) of established sockets on our port (/proc/net/tcp*).

    Kind 2 is the keepalive timer; its time left shows the TCP_KEEPIDLE set.
    """
    timers = []
    hz = 100  # /proc/net/tcp reports clock ticks (USER_HZ)
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                if local_port == port and fields[3] == "01":
                    kind, when = fields[5].split(":")
                    timers.append((int(kind, 16), int(when, 16) / hz))
    return timers


def test_idle_and_half_open_connections(tmp_path: Path) -> None:
    env = {"SIOCLUSTER_LIMITS_IDLE_TIMEOUT_S": "1.5", "SIOCLUSTER_LIMITS_TCP_KEEPALIVE_S": "5"}
    with start_cluster(workers=1, tmp_path=tmp_path, env=env) as cluster:
        # A kept-alive connection with nothing more to ask is closed after idle_timeout_s.
        with _kept_alive(cluster.port) as s:
            started = time.monotonic()
            assert s.recv(4096) == b""
            assert 1.0 < time.monotonic() - started < 5

        # A request body that stops arriving: 408, and the connection closed.
        async def session_id() -> str:
            async with aiohttp.ClientSession() as http:
                return str((await handshake(http, cluster.url))["sid"])

        sid = asyncio.run(session_id())
        started = time.monotonic()
        slow = raw_exchange(cluster.port, f"POST /socket.io/?EIO=4&transport=polling&sid={sid} "
                            "HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n40".encode())
        assert slow.startswith(b"HTTP/1.1 408"), slow[:80]
        assert time.monotonic() - started < 5
        assert cluster.status()["balancer"]["body_timeouts_408"] == 1

        # A client that half-closes after its request still gets the answer, then EOF.
        with socket.create_connection(("127.0.0.1", cluster.port), timeout=10) as s:
            s.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
            s.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"}"), answer

        # Half-open peers: every client socket, in the master or handed off to a
        # worker, has the kernel probing it after tcp_keepalive_s (not 2 hours).
        async def held() -> None:
            client = socketio.AsyncClient(reconnection=False)
            await client.connect(cluster.url, transports=["websocket"], wait_timeout=10)
            with socket.create_connection(("127.0.0.1", cluster.port), timeout=10) as s:
                s.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
                await asyncio.sleep(0.3)
                timers = _server_timers(cluster.port)
            await disconnect(client)
            assert len(timers) >= 2, timers
            assert all(kind == 2 and left <= 5.5 for kind, left in timers), timers

        asyncio.run(held())
        still_serving(cluster)


def test_a_large_streamed_body_that_stalls_gets_408(tmp_path: Path) -> None:
    """Bodies over 256 KB to the app's own routes are streamed to the worker;
    idle_timeout_s still bounds the wait for each part of them."""
    env = {"SIOCLUSTER_LIMITS_IDLE_TIMEOUT_S": "1.5"}
    with start_cluster(workers=1, tmp_path=tmp_path, env=env) as cluster:
        with socket.create_connection(("127.0.0.1", cluster.port), timeout=10) as s:
            s.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
            s.sendall(b"x" * 300_000)
            started = time.monotonic()
            answer = b""
            with contextlib.suppress(ConnectionResetError):
                while chunk := s.recv(4096):
                    answer += chunk
        assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
        assert time.monotonic() - started < 6
        # The same upload, sent whole, still works.
        body = b"y" * 1_000_000
        answer = raw_exchange(cluster.port, b"POST /upload HTTP/1.1\r\nHost: x\r\n"
                              b"Content-Length: 1000000\r\n\r\n" + body)
        assert answer.startswith(b"HTTP/1.1 200") and b'"length": 1000000' in answer, answer
        assert cluster.status()["balancer"]["body_timeouts_408"] == 1
        still_serving(cluster)
