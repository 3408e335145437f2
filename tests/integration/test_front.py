"""The httptools front door (balancer/front.py) against a live cluster, over raw sockets:
HTTP/1.1 behaviour that the socket.io clients never exercise.  One cluster for all."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.clients import raw_exchange, still_serving
from tests.cluster import Cluster, start_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with start_cluster(workers=2, tmp_path=tmp_path_factory.mktemp("front")) as c:
        yield c


def _read_until_close(s: socket.socket) -> bytes:
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


def _responses(data: bytes) -> list[tuple[bytes, bytes]]:
    """(head, body) of each Content-Length response in ``data``."""
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        length = next(int(v) for k, _, v in (ln.partition(b":") for ln in head.split(b"\r\n"))
                      if k.lower() == b"content-length")
        out.append((head, rest[:length]))
        data = rest[length:]
    return out


def test_pipelined_requests_are_answered_in_order(cluster: Cluster) -> None:
    with socket.create_connection(("127.0.0.1", cluster.port), timeout=10) as s:
        s.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                  b"GET /socket.io/?EIO=4&transport=polling&sid=nope HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answers = _responses(_read_until_close(s))
    statuses = [head.split(b" ")[1] for head, _ in answers]
    assert statuses == [b"200", b"200", b"400", b"200"], answers
    assert b'"length": 3' in answers[1][1]
    assert b"Session ID unknown" in answers[2][1]
    assert b"Connection: close" in answers[3][0]


def test_expect_continue_head_and_keep_alive(cluster: Cluster) -> None:
    with socket.create_connection(("127.0.0.1", cluster.port), timeout=10) as s:
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"hello")
        answer = b""
        while not answer.endswith(b"}"):
            answer += s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 200") and b'"length": 5' in answer, answer
        # HEAD: the head of the answer, no body, and the connection goes on.
        s.sendall(b"HEAD /pid HTTP/1.1\r\nHost: x\r\n\r\n")
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += s.recv(4096)
        assert head.startswith(b"HTTP/1.1 200"), head
        s.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        rest = _read_until_close(s)
        assert rest.startswith(b"HTTP/1.1 200") and rest.endswith(b"}"), rest


def test_answers_without_a_length_and_large_ones(cluster: Cluster) -> None:
    chunked = raw_exchange(cluster.port, b"GET /chunks HTTP/1.1\r\nHost: x\r\n"
                           b"Connection: close\r\n\r\n")
    head, _, body = chunked.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head, head
    decoded = b""
    while True:
        size, _, body = body.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            break
        decoded, body = decoded + body[:n], body[n + 2:]
    assert decoded == b"part0;part1;part2;"
    # An HTTP/1.0 client: no chunking, the close ends the body.
    old = raw_exchange(cluster.port, b"GET /chunks HTTP/1.0\r\nHost: x\r\n\r\n")
    assert old.endswith(b"\r\n\r\npart0;part1;part2;"), old
    big = raw_exchange(cluster.port, b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert big.startswith(b"HTTP/1.1 200") and big.endswith(b"x" * 1_000_000)


def test_refusals_on_a_kept_alive_connection(cluster: Cluster) -> None:
    with socket.create_connection(("127.0.0.1", cluster.port), timeout=10) as s:
        s.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while not answer.endswith(b"}"):
            answer += s.recv(4096)
        s.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n")
        refused = _read_until_close(s)
    assert refused.startswith(b"HTTP/1.1 431"), refused[:80]
    smuggled = raw_exchange(cluster.port, b"POST /upload HTTP/1.1\r\nHost: x\r\n"
                            b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd")
    assert smuggled.startswith(b"HTTP/1.1 400"), smuggled[:80]
    still_serving(cluster)


def test_a_refused_upgrade_on_a_kept_alive_connection_closes_it(cluster: Cluster) -> None:
    """The parser reads no HTTP past an upgrade's head: refused, the connection ends
    (aiohttp's client would otherwise reuse a connection nobody reads)."""
    with socket.create_connection(("127.0.0.1", cluster.port), timeout=10) as s:
        s.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while not answer.endswith(b"}"):
            answer += s.recv(4096)
        s.sendall(b"GET /socket.io/?EIO=4&transport=websocket&sid=nope HTTP/1.1\r\nHost: x\r\n"
                  b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        refused = _read_until_close(s)
    assert refused.startswith(b"HTTP/1.1 400") and b"Connection: close" in refused, refused


def test_the_aiohttp_server_is_still_a_switch_away(tmp_path: Path) -> None:
    env = {"SIOCLUSTER_BALANCER_HTTP": "aiohttp"}
    with start_cluster(workers=1, tmp_path=tmp_path, env=env) as cluster:
        answer = raw_exchange(cluster.port, b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200"), answer[:80]
        still_serving(cluster)
