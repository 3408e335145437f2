"""Churn: thousands of sessions from clients that go away leave nothing open.

Every connection here ends the way a client process's does: it closes (FIN)
or vanishes (RST).  After each churn the master's open descriptors are back
to their baseline, within a few seconds, and no socket on the public or the
admin port is left in CLOSE-WAIT (the client closed, the master did not).
The baseline is taken after a warm-up round; pooled keep-alive connections
to the workers are closed after 5 s idle (balancer/upstream.py), so they
come back too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from pathlib import Path

from tests.churn import churn, close_wait, process_fds, rss_bytes
from tests.cluster import Cluster, start_cluster
from tests.waiting import eventually

FD_SLACK = 20


def _settled(cluster: Cluster, baseline: int, timeout: float = 10.0) -> tuple[int, int, int]:
    """Wait for the master's fds to come back; (fds, CLOSE-WAIT public, CLOSE-WAIT admin)."""
    pid = cluster.proc.pid
    deadline = time.monotonic() + timeout
    while True:
        state = (process_fds(pid), close_wait(cluster.port), close_wait(cluster.admin_port))
        if (state[0] <= baseline + FD_SLACK and not state[1] and not state[2]) \
                or time.monotonic() > deadline:
            return state
        time.sleep(0.1)


def _churn(cluster: Cluster, sessions: int, **kwargs: object) -> None:
    result = asyncio.run(churn(cluster.port, sessions, **kwargs))  # type: ignore[arg-type]
    assert result.failures == 0, result.errors
    assert result.sessions >= sessions * 0.9


def _assert_settled(cluster: Cluster, baseline: int) -> None:
    fds, waiting, admin_waiting = _settled(cluster, baseline)
    assert waiting == 0 and admin_waiting == 0, (waiting, admin_waiting)
    assert fds <= baseline + FD_SLACK, (fds, baseline)


def test_churn_handoff_fds_and_rss_flat(tmp_path: Path) -> None:
    """The issue's figure: 8 rounds of 1,500 sessions; RSS grows < 4 MB from round 2 to 8."""
    with start_cluster(tmp_path=tmp_path) as cluster:
        _churn(cluster, 500)
        baseline = process_fds(cluster.proc.pid)
        rss: list[int] = []
        for _ in range(8):
            _churn(cluster, 1500)
            rss.append(rss_bytes(cluster.proc.pid))
        _assert_settled(cluster, baseline)
        growth = rss[7] - rss[1]
        assert growth < 4 * 1024 * 1024, [r // 1024 for r in rss]


def test_churn_tunnel_mode(tmp_path: Path) -> None:
    with start_cluster(tmp_path=tmp_path, args=("--websocket", "tunnel")) as cluster:
        _churn(cluster, 500)
        baseline = process_fds(cluster.proc.pid)
        for _ in range(2):
            _churn(cluster, 1500)
        _assert_settled(cluster, baseline)
        assert cluster.status()["balancer"]["tunnels_active"] == 0


def test_churn_with_proxy_protocol_and_refused_headers(tmp_path: Path) -> None:
    env = {"SIOCLUSTER_BALANCER_PROXY_PROTOCOL": "true"}
    with start_cluster(tmp_path=tmp_path, env=env) as cluster:
        _churn(cluster, 500, proxy_from="10.1.2.3")
        baseline = process_fds(cluster.proc.pid)
        for _ in range(2):
            _churn(cluster, 1500, proxy_from="10.1.2.3")
        # Refused: no header at all, and a garbage one.  Each gets its 400 and a close.
        asyncio.run(_refused_proxy_headers(cluster.port, 200))
        _assert_settled(cluster, baseline)
        assert cluster.status()["balancer"]["proxy_protocol_errors_400"] >= 400


async def _refused_proxy_headers(port: int, count: int) -> None:
    async def one(head: bytes) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head)
        answer = await reader.read()
        assert answer.startswith(b"HTTP/1.1 400"), answer[:80]
        writer.close()

    semaphore = asyncio.Semaphore(32)

    async def bounded(head: bytes) -> None:
        async with semaphore:
            await one(head)

    await asyncio.gather(*(bounded(head) for _ in range(count) for head in (
        b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PROXY TCP9 nonsense\r\nGET / HTTP/1.1\r\n\r\n",
    )))


async def _answers(port: int, count: int, request: bytes, expect: bytes,
                   *, linger: float = 0.0) -> None:
    """``count`` connections that each send ``request`` (then wait ``linger``),
    read an answer starting with ``expect``, and close."""
    semaphore = asyncio.Semaphore(32)

    async def one() -> None:
        async with semaphore:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            if linger:
                await asyncio.sleep(linger)
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(expect), head[:80]
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    await asyncio.gather(*(one() for _ in range(count)))


def test_refusals_and_admin_leave_nothing_open(tmp_path: Path) -> None:
    """408, 413, 429, 400 and the admin listener, each from hundreds of clients."""
    env = {
        "SIOCLUSTER_LIMITS_HEADER_TIMEOUT_S": "0.3",
        "SIOCLUSTER_LIMITS_MAX_MESSAGE_BYTES": "1000",
        "SIOCLUSTER_LIMITS_HANDSHAKE_RATE_PER_IP": "1",
    }
    with start_cluster(tmp_path=tmp_path, env=env) as cluster:
        port = cluster.port
        baseline = process_fds(cluster.proc.pid)

        async def main() -> None:
            handshake = b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\r\n"
            await _answers(port, 300, handshake, b"HTTP/1.1 ")  # a few 200, then 429
            big = b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n" + b"x" * 2000
            await _answers(port, 300, big, b"HTTP/1.1 413")
            await _answers(port, 200, b"GET /pid HTTP/1.1\r\nHo", b"HTTP/1.1 408", linger=0.4)
            await _answers(port, 300, b"BREW / HTTP/9\r\n\r\n", b"HTTP/1.1 400")
            # The admin listener: kept-alive requests, then the client closes.
            health = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
            await _answers(cluster.admin_port, 300, health * 1, b"HTTP/1.1 200")

        asyncio.run(main())
        balancer = cluster.status()["balancer"]
        assert balancer["rate_limited_429"] > 200
        assert balancer["too_large_413"] >= 300
        assert balancer["head_timeouts_408"] >= 200
        _assert_settled(cluster, baseline)


def test_worker_killed_mid_request_leaves_nothing_open(tmp_path: Path) -> None:
    """Long-polls the master relays when their worker is SIGKILLed: answered 502, then
    closed.  (With polling_handoff on, these connections would be in the worker's gate
    and die with it, closed: tests/integration/test_polling_handoff.py.)"""
    with start_cluster(tmp_path=tmp_path,
                       config="[balancer]\npolling_handoff = false\n") as cluster:
        _churn(cluster, 200)
        baseline = process_fds(cluster.proc.pid)
        victim = cluster.ready_workers()[0]

        async def main() -> list[int]:
            polls: list[tuple[str, asyncio.StreamReader, asyncio.StreamWriter]] = []
            for _ in range(60):
                reader, writer = await asyncio.open_connection("127.0.0.1", cluster.port)
                writer.write(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\r\n")
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                body = await reader.readexactly(length)
                sid = body.split(b'"sid":"')[1].split(b'"')[0].decode()
                # A long-poll: python-engineio holds it until something is sent.
                writer.write(f"GET /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\n"
                             "Host: x\r\n\r\n".encode())
                polls.append((sid, reader, writer))
            await asyncio.sleep(0.5)
            os.kill(victim["pid"], signal.SIGKILL)
            statuses: list[int] = []
            for sid, reader, writer in polls:
                if sid.startswith(f"{victim['slot']}."):
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                    statuses.append(int(head.split()[1]))
                writer.close()
            return statuses

        statuses = asyncio.run(main())
        assert statuses and set(statuses) == {502}, statuses
        cluster.wait_ready(2, exclude_pids={victim["pid"]})
        _assert_settled(cluster, baseline)


def test_open_files_are_watched(tmp_path: Path) -> None:
    """/metrics shows fds against the limit; /health is degraded above 80% of it."""
    with start_cluster(tmp_path=tmp_path, nofile=256, workers=1) as cluster:
        assert "open files limit: soft 256 -> 256 (hard 256)" in cluster.log()
        metrics = cluster.admin("/metrics")[1]
        assert 'siocluster_max_fds{role="master",slot=""} 256.0' in metrics
        assert 'siocluster_max_fds{role="worker",slot="0"} 256.0' in metrics
        assert 'siocluster_open_fds{role="master",slot=""}' in metrics
        held = []
        for _ in range(200):  # one at a time: the upstream connection is reused
            conn = socket.create_connection(("127.0.0.1", cluster.port))
            conn.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
            assert conn.recv(65536).startswith(b"HTTP/1.1 200")
            held.append(conn)
        code, health = cluster.admin("/health")
        assert code == 200 and health["status"] == "degraded", health
        assert any(r.startswith("master has ") and "of 256 open files" in r
                   for r in health["reasons"]), health
        status = cluster.status()
        assert status["master"]["fd_limit"] == 256
        # Past the limit: a connection the master accepted but cannot open an
        # upstream for is answered 502; the rest wait in the backlog while the
        # master logs the failed accept (once) and keeps trying; freed fds serve
        # them.  Nobody hangs.
        waiting = []
        for _ in range(80):
            conn = socket.create_connection(("127.0.0.1", cluster.port))
            conn.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
            waiting.append(conn)
        eventually(lambda: "accept failed" in cluster.log(), what="the master's accept to fail")
        for conn in held:
            conn.close()
        answers = []
        for conn in waiting:
            conn.settimeout(10)
            answers.append(conn.recv(65536).split(b"\r\n", 1)[0])
            conn.close()
        assert set(answers) <= {b"HTTP/1.1 200 OK", b"HTTP/1.1 502 Bad Gateway"}, answers
        assert answers.count(b"HTTP/1.1 200 OK") >= 40, answers  # those accepted once freed
        assert cluster.log().count("accept failed") == 1, cluster.log()
        deadline = time.monotonic() + 10
        while cluster.admin("/health")[1]["status"] != "ok":
            assert time.monotonic() < deadline, cluster.admin("/health")
            time.sleep(0.2)
