"""Kept-alive polling connections served by the worker that owns their sessions.

The master passes a connection whose requests go to one worker to that worker
(balancer/stickiness.py); the worker's gate (worker/gate.py) serves its own
sessions' requests and gives the connection back with any other request.
Real cluster, raw HTTP/1.1 over one socket, so which connection carries what
is known exactly.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from balancer.sid import parse_sid
from tests.churn import process_fds
from tests.cluster import Cluster, run_cli, start_cluster
from tests.waiting import eventually

Q = "/socket.io/?EIO=4&transport=polling"


def _request(conn: http.client.HTTPConnection, method: str, path: str,
             body: bytes | None = None) -> tuple[int, bytes]:
    conn.request(method, path, body=body)
    resp = conn.getresponse()
    return resp.status, resp.read()


def _open_session(conn: http.client.HTTPConnection) -> str:
    status, body = _request(conn, "GET", Q)
    assert status == 200, body
    sid = str(json.loads(body[1:])["sid"])
    assert _request(conn, "POST", f"{Q}&sid={sid}", b"40") == (200, b"OK")
    status, body = _request(conn, "GET", f"{Q}&sid={sid}")
    assert status == 200 and body.startswith(b"40{"), body
    return sid


def _whoami(conn: http.client.HTTPConnection, sid: str, ack: int) -> dict[str, object]:
    assert _request(conn, "POST", f"{Q}&sid={sid}", f'42{ack}["whoami"]'.encode()) == (200, b"OK")
    status, body = _request(conn, "GET", f"{Q}&sid={sid}")
    assert status == 200 and body.startswith(f"43{ack}".encode()), body
    answer: dict[str, object] = json.loads(body[len(f"43{ack}"):])[0]
    return answer


def _balancer(cluster: Cluster) -> dict[str, int]:
    figures: dict[str, int] = cluster.status()["balancer"]
    return figures


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One 2-worker cluster for the tests that read the counters as differences."""
    with start_cluster(workers=2, tmp_path=tmp_path_factory.mktemp("handoff")) as cluster:
        yield cluster


class Delta:
    """The master's counters since this was made."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.before = _balancer(cluster)

    def __getitem__(self, key: str) -> int:
        return _balancer(self.cluster)[key] - self.before[key]


def _own_connection(cluster: Cluster) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", cluster.port, timeout=10)
    delta = Delta(cluster)
    sid = _open_session(conn)
    sock = conn.sock
    requests = _balancer(cluster)["requests"]
    pids = {_whoami(conn, sid, ack)["pid"] for ack in range(20)}
    assert conn.sock is sock, "one keep-alive connection throughout"
    assert delta["polling_handoffs"] == 1 and delta["polling_returns"] == 0
    # It moved with the handshake, the master admitting it first.
    assert _balancer(cluster)["requests"] == requests, "the master saw none of the 40"
    assert len(pids) == 1
    # The app sees the client's address, as it does through the master.
    assert _whoami(conn, sid, 99)["remote"] == "127.0.0.1"
    conn.close()


def test_a_sessions_own_connection_is_served_by_its_worker(two: Cluster) -> None:
    _own_connection(two)


def _request_counts(cluster: Cluster) -> dict[str, float]:
    """``siocluster_proxy_request_seconds_count`` by kind, from /metrics."""
    prefix = 'siocluster_proxy_request_seconds_count{kind="'
    counts: dict[str, float] = {}
    for line in cluster.admin("/metrics")[1].splitlines():
        if line.startswith(prefix):
            kind, _, value = line[len(prefix):].partition('"} ')
            counts[kind] = float(value)
    return counts


def _handshakes_answered(sock: socket.socket, count: int) -> list[str]:
    """The sids of ``count`` handshake answers read off ``sock``, in order."""
    sock.settimeout(10)
    answers = b""
    while answers.count(b'"sid":"') < count:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {answers!r}"
        answers += chunk
    assert answers.count(b"HTTP/1.1 200 ") == count, answers
    return [json.loads(part.split(b"}", 1)[0].join((b"{", b"}")))["sid"]
            for part in answers.split(b'0{')[1:]]


def test_a_handshake_trickled_in_before_its_head_is_whole_moves_all_the_same(
        two: Cluster) -> None:
    """The front door passes a fresh connection's handshake on unread, whether its
    head was all there when it was accepted or came in parts later."""
    delta = Delta(two)
    sock = socket.create_connection(("127.0.0.1", two.port), timeout=10)
    head = f"GET {Q}&t=1 HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    sock.sendall(head[:10])
    time.sleep(0.3)
    sock.sendall(head[10:])
    (sid,) = _handshakes_answered(sock, 1)
    conn = http.client.HTTPConnection("127.0.0.1", two.port, timeout=10)
    conn.sock = sock  # the same connection, on with http.client
    assert _request(conn, "POST", f"{Q}&sid={sid}", b"40") == (200, b"OK")
    assert _request(conn, "GET", f"{Q}&sid={sid}")[1].startswith(b"40{")
    assert _whoami(conn, sid, 1)["pid"] == _whoami(conn, sid, 2)["pid"]
    assert delta["polling_handoffs"] == 1 and delta["handshakes"] == 1
    assert delta["requests"] == 1, "the master read none of the session's requests"
    conn.close()


def test_handshakes_pipelined_on_a_fresh_connection_are_all_answered_in_order(
        two: Cluster) -> None:
    """The first goes unread to a worker's gate, which serves it; the second is not
    its sid's request, so the connection goes back to the master with it."""
    delta = Delta(two)
    sock = socket.create_connection(("127.0.0.1", two.port), timeout=10)
    sock.sendall(b"".join(f"GET {Q}&t={n} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
                          for n in range(3)))
    sids = _handshakes_answered(sock, 3)
    assert len(set(sids)) == 3
    assert delta["handshakes"] == 3 and delta["polling_handoffs"] == 1
    assert delta["polling_returns"] == 1
    sock.close()


def test_what_the_gate_serves_is_in_the_masters_latency_histograms(two: Cluster) -> None:
    """/metrics and the dashboard time what the gates answer, not only what the
    master relays: the gates report their histograms in their heartbeats."""
    last: list[dict[str, float]] = []

    def settled() -> dict[str, float] | None:
        """Two reads a heartbeat apart agree: the earlier tests' reports are all in."""
        now = _request_counts(two)
        done = bool(last) and last[-1] == now
        last.append(now)
        return now if done else None

    before = eventually(settled, interval_s=1.2, what="the histograms settled")
    conn = http.client.HTTPConnection("127.0.0.1", two.port, timeout=10)
    requests = _balancer(two)["requests"]
    sid = _open_session(conn)  # the handshake moves with the connection: timed in the gate
    for ack in range(10):
        _whoami(conn, sid, ack)
    # The master counts the handshake it admitted before passing the connection on,
    # and relays nothing.
    assert _balancer(two)["requests"] == requests + 1, "the master relayed none of them"
    conn.close()

    def grown() -> dict[str, float] | None:
        now = _request_counts(two)
        gained = {kind: now.get(kind, 0) - before.get(kind, 0) for kind in now}
        ok = gained["handshake"] >= 1 and gained["send"] >= 11 and gained["poll"] >= 11
        return gained if ok else None

    gained = eventually(grown, what="the gate's requests in /metrics")
    # Each once: the master relayed none of them, and the earlier tests' are in ``before``.
    assert gained["handshake"] == 1 and gained["send"] == 11 and gained["poll"] == 11, gained


def test_the_same_with_an_asgi_app(tmp_path: Path) -> None:
    with start_cluster("fastapi_wrapped:app", workers=2, tmp_path=tmp_path) as cluster:
        _own_connection(cluster)


def _remote_through_the_gate(cluster: Cluster, xff: str) -> object:
    """A session opened on a fresh connection, its handshake claiming ``xff``: the
    handshake moves with the connection, so the gate serves it; the address the
    app saw."""
    conn = http.client.HTTPConnection("127.0.0.1", cluster.port, timeout=10)
    delta = Delta(cluster)
    conn.request("GET", Q, headers={"X-Forwarded-For": xff})
    resp = conn.getresponse()
    body = resp.read()
    assert resp.status == 200, body
    sid = str(json.loads(body[1:])["sid"])
    assert _request(conn, "POST", f"{Q}&sid={sid}", b"40") == (200, b"OK")
    status, body = _request(conn, "GET", f"{Q}&sid={sid}")
    assert status == 200 and body.startswith(b"40{"), body
    remote = _whoami(conn, sid, 1)["remote"]
    assert delta["polling_handoffs"] == 1 and delta["polling_returns"] == 0
    conn.close()
    return remote


def test_a_clients_own_x_forwarded_for_is_not_believed_by_the_gate(two: Cluster) -> None:
    assert _remote_through_the_gate(two, "203.0.113.7") == "127.0.0.1"


@pytest.mark.parametrize("app", ["echo_app:app", "fastapi_wrapped:app"])
def test_a_trusted_proxys_client_is_the_remote_through_the_gate(tmp_path: Path,
                                                                 app: str) -> None:
    config = '[balancer]\ntrusted_proxies = ["127.0.0.1"]\n'
    with start_cluster(app, workers=1, tmp_path=tmp_path, config=config) as cluster:
        assert _remote_through_the_gate(cluster, "198.51.100.2, 203.0.113.7") == "203.0.113.7"


def test_a_connection_shared_by_two_workers_sessions_goes_back_and_stays(two: Cluster) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", two.port, timeout=10)
    delta = Delta(two)
    sids: list[str] = []
    while len({parse_sid(s).slot for s in sids}) < 2:  # type: ignore[union-attr]
        sids.append(_open_session(conn))
    sock = conn.sock
    # It moved with the first handshake and came back with the second one.
    assert delta["polling_handoffs"] == 1 and delta["polling_returns"] == 1
    for ack in range(10):
        for sid in sids:
            _whoami(conn, sid, ack)
    assert conn.sock is sock
    # Then the master keeps the mixed connection.
    assert delta["polling_handoffs"] == 1 and delta["polling_returns"] == 1
    assert delta["session_unknown_400"] == 0
    conn.close()


def test_pipelined_requests_keep_their_order_across_a_return(two: Cluster) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", two.port, timeout=10)
    a = _open_session(conn)  # the connection is now a's worker's
    other = http.client.HTTPConnection("127.0.0.1", two.port, timeout=10)
    while parse_sid(b := _open_session(other)).slot == parse_sid(a).slot:  # type: ignore[union-attr]
        pass
    delta = Delta(two)
    _whoami(conn, a, 1)
    raw = b"".join(
        f"POST {Q}&sid={sid} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(p)}\r\n\r\n".encode()
        + p
        for sid, p in ((a, b'42["store",1]'), (b, b'42["store",2]'), (a, b'42["store",3]')))
    sock = conn.sock
    assert sock is not None
    sock.sendall(raw)
    answers = b""
    sock.settimeout(10)
    while answers.count(b"\r\n\r\nOK") < 3:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {answers!r}"
        answers += chunk
    heads = answers.split(b"HTTP/1.1 ")[1:]
    assert [h[:3] for h in heads] == [b"200"] * 3, answers
    assert delta["polling_returns"] == 1
    # The connection still serves, from the master now.
    _whoami(conn, b, 2)
    conn.close()
    other.close()


def test_an_upgrade_on_a_handed_off_connection_stays_in_the_worker(two: Cluster) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", two.port, timeout=10)
    sid = _open_session(conn)
    delta = Delta(two)

    def upgrades() -> int:  # from the workers' heartbeats
        return sum(w.get("gate", {}).get("upgrades", 0) for w in two.status()["workers"])

    upgraded = upgrades()
    sock = conn.sock
    assert sock is not None
    sock.sendall(f"GET /socket.io/?EIO=4&transport=websocket&sid={sid} HTTP/1.1\r\n"
                 "Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n".encode())
    sock.settimeout(10)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    mask = b"\x01\x02\x03\x04"
    payload = b"2probe"
    sock.sendall(b"\x81" + bytes([0x80 | len(payload)]) + mask
                 + bytes(c ^ mask[i % 4] for i, c in enumerate(payload)))
    frame = head.partition(b"\r\n\r\n")[2]
    while len(frame) < 8:
        frame += sock.recv(4096)
    assert frame[:8] == b"\x81\x063probe", frame
    assert delta["handoffs"] == 0 and delta["polling_returns"] == 0
    eventually(lambda: upgrades() == upgraded + 1, what="the gate's upgrade in a heartbeat")
    conn.close()


LIMITS = """
[limits]
max_message_bytes = 10000
header_timeout_s = 1.0
"""


def test_the_limits_hold_on_a_handed_off_connection(tmp_path: Path) -> None:
    with start_cluster(workers=1, tmp_path=tmp_path, config=LIMITS) as cluster:
        conn = http.client.HTTPConnection("127.0.0.1", cluster.port, timeout=10)
        sid = _open_session(conn)
        assert _balancer(cluster)["polling_handoffs"] == 1
        status, body = _request(conn, "POST", f"{Q}&sid={sid}", b"4" + b"x" * 20_000)
        assert status == 413 and b"10000" in body

        conn = http.client.HTTPConnection("127.0.0.1", cluster.port, timeout=10)
        sid = _open_session(conn)
        sock = conn.sock
        assert sock is not None and _balancer(cluster)["polling_handoffs"] == 2
        sock.sendall(f"GET {Q}&sid={sid} HTTP/1.1\r\nHo".encode())  # and no more
        started = time.monotonic()
        sock.settimeout(10)
        answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert time.monotonic() - started < 5
        assert sock.recv(4096) == b""  # closed


def test_vanished_clients_leave_nothing_and_a_reload_gives_connections_back(
        tmp_path: Path) -> None:
    with start_cluster(workers=1, tmp_path=tmp_path) as cluster:
        pid = next(iter(cluster.worker_pids()))
        baseline = _sockets(pid)
        for _ in range(30):
            conn = http.client.HTTPConnection("127.0.0.1", cluster.port, timeout=10)
            sid = _open_session(conn)
            _whoami(conn, sid, 1)
            assert conn.sock is not None
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()  # reset, mid-session
        assert _balancer(cluster)["polling_handoffs"] == 30
        deadline = time.monotonic() + 10
        while (now := _sockets(pid)) > baseline:
            assert time.monotonic() < deadline, f"{now - baseline} sockets left in the worker"
            time.sleep(0.2)

        conn = http.client.HTTPConnection("127.0.0.1", cluster.port, timeout=10)
        sid = _open_session(conn)
        _whoami(conn, sid, 1)
        sock = conn.sock
        before = cluster.worker_pids()
        assert run_cli("reload", "--admin-port", str(cluster.admin_port)).returncode == 0
        deadline = time.monotonic() + 30
        while not (ready := {w["pid"] for w in cluster.ready_workers()}) or ready & before \
                or cluster.worker_pids() & before:
            assert time.monotonic() < deadline, "reload did not replace the worker"
            time.sleep(0.1)
        # The old worker gave the idle connection back: it still works, for a new session.
        new = _open_session(conn)
        assert conn.sock is sock
        assert _whoami(conn, new, 2)["pid"] in ready
        assert _balancer(cluster)["polling_returns"] >= 1

        # A worker killed with a long-poll in flight on a connection its gate holds:
        # the connection dies with it (no 502: nobody is left to answer), at once.
        master_fds = process_fds(cluster.proc.pid)
        held = http.client.HTTPConnection("127.0.0.1", cluster.port, timeout=10)
        sid = _open_session(held)
        assert held.sock is not None
        held.sock.sendall(f"GET {Q}&sid={sid} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        victim = next(iter(cluster.worker_pids()))
        time.sleep(0.3)
        os.kill(victim, signal.SIGKILL)
        held.sock.settimeout(10)
        with contextlib.suppress(ConnectionResetError):
            assert held.sock.recv(4096) == b""
        held.close()
        cluster.wait_ready(1, exclude_pids={victim})
        eventually(lambda: process_fds(cluster.proc.pid) <= master_fds + 2,
                   what="the master's fds back to where they were")


def _sockets(pid: int) -> int:
    return sum(1 for fd in Path(f"/proc/{pid}/fd").iterdir() if "socket" in str(fd.readlink()))
