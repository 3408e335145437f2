"""Sticky routing against a live cluster: keep-alive reuse, stale sids, chunked bodies."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import socket
import time
from pathlib import Path

import aiohttp
import pytest
import socketio

from balancer.sid import parse_sid
from tests.clients import disconnect
from tests.cluster import start_cluster
from tests.eio import connect_and_upgrade, handshake, ws_call

SESSION_UNKNOWN = b'{"code":1,"message":"Session ID unknown"}'


def _request(conn: http.client.HTTPConnection, method: str, path: str,
             body: bytes | None = None) -> tuple[int, bytes]:
    conn.request(method, path, body=body)
    resp = conn.getresponse()
    return resp.status, resp.read()


def test_one_keepalive_connection_carries_sessions_of_two_workers(tmp_path: Path) -> None:
    with start_cluster(workers=2, tmp_path=tmp_path) as cluster:
        conn = http.client.HTTPConnection("127.0.0.1", cluster.port, timeout=10)
        sids = []
        for _ in range(2):
            status, body = _request(conn, "GET", "/socket.io/?EIO=4&transport=polling")
            assert status == 200
            sids.append(json.loads(body[1:])["sid"])
        sock = conn.sock
        owners = {parse_sid(s).slot for s in sids}  # type: ignore[union-attr]
        assert owners == {0, 1}, "the two handshakes should land on different workers"
        q = "/socket.io/?EIO=4&transport=polling&sid="
        for sid in sids:
            assert _request(conn, "POST", q + sid, b"40") == (200, b"OK")
        for sid in sids:
            status, body = _request(conn, "GET", q + sid)
            assert status == 200 and body.startswith(b"40{"), body
        for round_ in range(5):
            for sid in sids:
                packet = f'42{round_}["whoami"]'.encode()
                assert _request(conn, "POST", q + sid, packet) == (200, b"OK")
            pids = []
            for sid in sids:
                status, body = _request(conn, "GET", q + sid)
                assert status == 200 and body.startswith(f"43{round_}".encode()), body
                answer = json.loads(body[len(f"43{round_}"):])[0]
                assert answer["sid"] != sid  # the socket.io sid, not the engine.io one
                pids.append(answer["pid"])
            assert len(set(pids)) == 2
        assert conn.sock is sock, "all of it went over one keep-alive connection"
        assert cluster.status()["balancer"]["session_unknown_400"] == 0


def test_stale_sid_after_worker_replaced_gets_400_then_reconnects(tmp_path: Path) -> None:
    with start_cluster(workers=2, tmp_path=tmp_path) as cluster:

        async def main() -> None:
            client = socketio.AsyncClient(reconnection=True, reconnection_delay=0.1,
                                          reconnection_delay_max=0.5)
            await client.connect(cluster.url, wait_timeout=10)
            who = await client.call("whoami", timeout=5)
            async with aiohttp.ClientSession() as http:
                # A raw polling session on the same worker as the client.
                for _ in range(10):
                    info = await handshake(http, cluster.url)
                    if parse_sid(info["sid"]).slot == parse_sid(who["sid"]).slot:  # type: ignore[union-attr]
                        break
                stale = info["sid"]
                os.kill(who["pid"], signal.SIGKILL)
                started = time.monotonic()
                cluster.wait_ready(2, timeout=10, exclude_pids={who["pid"]})
                replaced_in = time.monotonic() - started
                assert replaced_in < 3.0, replaced_in
                url = f"{cluster.url}/socket.io/?EIO=4&transport=polling&sid={stale}"
                async with http.get(url) as resp:
                    assert resp.status == 400
                    assert await resp.read() == SESSION_UNKNOWN
            deadline = time.monotonic() + 10
            while True:
                try:
                    again = await client.call("whoami", timeout=2)
                    break
                except (socketio.exceptions.TimeoutError,
                        socketio.exceptions.BadNamespaceError):
                    assert time.monotonic() < deadline, "client did not reconnect"
                    await asyncio.sleep(0.1)
            assert again["pid"] != who["pid"]
            await disconnect(client)

        asyncio.run(main())
        status = cluster.status()
        assert any(w["restarts"] == 1 and "SIGKILL" in (w["last_exit"] or "")
                   for w in status["workers"])


def _raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        chunks = b""
        while b"\r\n\r\n" not in chunks:
            chunks += s.recv(65536)
        head, _, body = chunks.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            body += s.recv(65536)
        return head + b"\r\n\r\n" + body


def _chunked(body: bytes) -> bytes:
    return b"".join(f"{len(body[i:i+3]):x}\r\n".encode() + body[i:i + 3] + b"\r\n"
                    for i in range(0, len(body), 3)) + b"0\r\n\r\n"


def test_chunked_post_reaches_the_app(tmp_path: Path) -> None:
    with start_cluster(workers=2, tmp_path=tmp_path) as cluster:
        port = cluster.port
        head = _raw(port, b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\n"
                          b"Host: x\r\nConnection: close\r\n\r\n")
        sid = json.loads(head.partition(b"\r\n\r\n")[2][1:])["sid"]
        q = f"/socket.io/?EIO=4&transport=polling&sid={sid}".encode()

        def chunked_post(body: bytes) -> bytes:
            return _raw(port, b"POST " + q + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                        b"Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
                        + _chunked(body))

        def get() -> bytes:
            return _raw(port, b"GET " + q + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")

        assert chunked_post(b"40").endswith(b"\r\n\r\nOK")
        assert b"\r\n\r\n40{" in get()
        message = b'421["echo","sent in chunks, all of it"]'
        assert chunked_post(message).endswith(b"\r\n\r\nOK")
        assert get().endswith(b'431["sent in chunks, all of it"]')


@pytest.mark.parametrize("mode", ["handoff", "tunnel"])
def test_forwarded_headers_and_app_routes(tmp_path: Path, mode: str) -> None:
    config = '[balancer]\ntrusted_proxies = ["127.0.0.1"]\n'
    args = ("--websocket", mode)
    with start_cluster(workers=2, tmp_path=tmp_path, args=args) as plain, \
            start_cluster(workers=1, tmp_path=tmp_path, config=config, args=args) as trusting:

        async def main() -> None:
            async with aiohttp.ClientSession() as http:
                spoof = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
                async with http.get(plain.url + "/pid", headers=spoof) as resp:
                    seen = await resp.json()
                assert seen["remote"] == "127.0.0.1" and seen["scheme"] == "http"
                assert seen["host"] == f"127.0.0.1:{plain.port}"
                async with http.get(trusting.url + "/pid", headers=spoof) as resp:
                    seen = await resp.json()
                assert seen["remote"] == "203.0.113.7"
                async with http.get(plain.url + "/big") as resp:
                    assert len(await resp.read()) == 1_000_000
                big = os.urandom(2_000_000)
                async with http.post(plain.url + "/upload", data=big) as resp:
                    assert (await resp.json())["length"] == 2_000_000
                async with http.get(plain.url + "/nowhere") as resp:
                    assert resp.status == 404
                # Through the WebSocket tunnel, the connect environ comes from the upgrade.
                for cluster, expected in ((plain, "127.0.0.1"), (trusting, "203.0.113.7")):
                    client = socketio.AsyncClient(reconnection=False)
                    await client.connect(cluster.url, transports=["websocket"], headers=spoof)
                    who = await client.call("whoami", timeout=5)
                    assert who["remote"] == expected
                    await disconnect(client)

        asyncio.run(main())


def test_raw_upgrade_and_ws_events(tmp_path: Path) -> None:
    with start_cluster(workers=2, tmp_path=tmp_path) as cluster:

        async def main() -> None:
            async with aiohttp.ClientSession() as http:
                _sid, ws = await connect_and_upgrade(http, cluster.url)
                payload = {"text": "x" * 200_000}
                assert await ws_call(ws, "echo", payload) == payload
                await ws.close()

        asyncio.run(main())
