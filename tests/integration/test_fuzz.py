"""Fuzzing a live 2-worker cluster with malformed traffic.

Categories (one test each, sharing one cluster): Engine.IO/Socket.IO garbage
over polling POSTs and over WebSocket frames, random sids, random request
heads over raw TCP, oversize bodies/messages/heads, and slowloris; and, on a
second cluster with ``[balancer] proxy_protocol`` on, random PROXY v1/v2
headers (its well-behaved clients come through a real HAProxy).

Throughout, the invariants are checked after every category:

* the master is alive and ``/health`` answers 200;
* the workers' pids are the ones we started with (a restart is a finding);
* two well-behaved python-socketio clients (WebSocket and polling), connected
  before the first category, still answer an ``echo`` call.

Hypothesis generates the inputs; each example is a *batch* sent concurrently,
so the whole module stays well under a minute.  Per-category counts and the
findings (5xx answers, tracebacks in the cluster log) are printed: run with
``-s`` (or ``-rP``) to see them.  ``SIOCLUSTER_FUZZ_SCALE`` multiplies the
example counts.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import socketio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from balancer.sid import mint_sid
from tests.cluster import Cluster, start_cluster
from tests.eio import EIO_PATH, handshake, post
from tests.haproxy import haproxy_front
from tests.waiting import eventually

SCALE = float(os.environ.get("SIOCLUSTER_FUZZ_SCALE", "1"))
MAX_MESSAGE = 65_536
HEAD_TIMEOUT_S = 1.0
ANSWER_TIMEOUT_S = 0.75

COUNTS: collections.Counter[str] = collections.Counter()
OUTCOMES: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
SAMPLES: dict[str, dict[str, str]] = collections.defaultdict(dict)
FINDINGS: list[str] = []


def fuzz_settings(examples: int) -> Any:
    return settings(max_examples=max(1, int(examples * SCALE)), deadline=None,
                    database=None, suppress_health_check=list(HealthCheck))


# The cluster and its well-behaved clients


class Canary:
    """python-socketio clients on their own loop in a thread, asked to echo on demand."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.clients: dict[str, socketio.AsyncClient] = {}
        self.disconnects: list[str] = []
        self.calls = 0

    def _run(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def connect(self) -> None:
        async def go() -> None:
            for transport in ("websocket", "polling"):
                c = socketio.AsyncClient(reconnection=False)
                c.on("disconnect", lambda reason=None, t=transport: self.disconnects.append(
                    f"{t}: {reason}"))
                await c.connect(self.url, transports=[transport], wait_timeout=10)
                self.clients[transport] = c

        self._run(go())

    def check(self) -> None:
        async def go() -> None:
            for transport, c in self.clients.items():
                payload = {"n": self.calls, "transport": transport}
                assert await c.call("echo", payload, timeout=5) == payload, transport
                self.calls += 1

        self._run(go())

    def close(self) -> None:
        async def go() -> None:
            for c in self.clients.values():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(c.disconnect(), 1.0)

        with contextlib.suppress(Exception):
            self._run(go())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class Fuzzed:
    def __init__(self, cluster: Cluster, canary: Canary) -> None:
        self.cluster = cluster
        self.canary = canary
        self.pids = cluster.worker_pids()
        self.log_offset = 0

    def check(self, category: str) -> None:
        """The invariants; also reports what the cluster logged meanwhile."""
        cluster = self.cluster
        assert cluster.proc.poll() is None, f"master died during {category}:\n{cluster.log()}"
        code, body = cluster.admin("/health")
        assert code == 200, (category, code, body)
        pids = cluster.worker_pids()
        if pids != self.pids:
            FINDINGS.append(f"{category}: worker pids changed {sorted(self.pids)} -> "
                            f"{sorted(pids)}")
        assert pids == self.pids, FINDINGS[-1]
        self.canary.check()
        assert not self.canary.disconnects, self.canary.disconnects
        log = cluster.log()
        fresh, self.log_offset = log[self.log_offset:], len(log)
        tracebacks = fresh.count("Traceback (most recent call last)")
        if tracebacks:
            last = [line for line in fresh.splitlines() if line and not line.startswith(" ")]
            kinds = collections.Counter(
                line.split(":")[0] for line in last if line.split(":")[0].endswith("Error"))
            FINDINGS.append(f"{category}: {tracebacks} tracebacks logged by the cluster "
                            f"({dict(kinds)})")
        print(f"[fuzz] {category}: {COUNTS[category]} inputs; outcomes "
              f"{dict(OUTCOMES[category].most_common(8))}", flush=True)
        for outcome, sample in SAMPLES[category].items():
            print(f"[fuzz]   e.g. {outcome}: {sample}", flush=True)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    env = {"SIOCLUSTER_LIMITS_HEADER_TIMEOUT_S": str(HEAD_TIMEOUT_S),
           "SIOCLUSTER_LIMITS_MAX_MESSAGE_BYTES": str(MAX_MESSAGE)}
    with start_cluster(workers=2, env=env, tmp_path=tmp_path_factory.mktemp("fuzz")) as cluster:
        canary = Canary(cluster.url)
        canary.connect()
        fuzzed = Fuzzed(cluster, canary)
        try:
            yield fuzzed
            fuzzed.check("final")
        finally:
            canary.close()
            print(f"\n[fuzz] inputs per category: {dict(COUNTS)} (total {sum(COUNTS.values())})")
            print("[fuzz] findings:" + "".join(f"\n  - {f}" for f in FINDINGS) if FINDINGS
                  else "[fuzz] findings: none")


def note(category: str, outcome: str, detail: str = "") -> None:
    COUNTS[category] += 1
    OUTCOMES[category][outcome] += 1
    SAMPLES[category].setdefault(outcome, detail[:100])
    if outcome.startswith("5") and len(FINDINGS) < 50:
        FINDINGS.append(f"{category}: HTTP {outcome} for {detail[:120]!r}")


# Strategies

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=4),
    max_leaves=10,
)
placeholder = st.fixed_dictionaries({"_placeholder": st.booleans(),
                                     "num": st.integers(-5, 10**12) | st.text(max_size=3)})
namespaces = st.sampled_from(["", "/", "/nope,", "/,", "/" + "a" * 300 + ","]) | st.text(
    max_size=10).map(lambda t: f"/{t},")
ack_ids = st.just("") | st.integers(0, 10**40).map(str)
attachments = st.just("") | st.integers(0, 10**15).map(lambda n: f"{n}-") | st.just("-")
bad_json = st.sampled_from(["[", "{", '["a"', "[]]", '{"a":}', "nul", "[1,]", "\x00", "]["])
sio_bodies = st.one_of(
    json_values.map(json.dumps),
    st.lists(json_values, max_size=3).map(lambda v: json.dumps(["echo", *v])),
    st.lists(placeholder, min_size=1, max_size=3).map(lambda p: json.dumps(["echo", *p])),
    bad_json,
    st.text(max_size=40),
)
sio_packets = st.builds(
    lambda t, a, n, i, b: f"4{t}{a}{n}{i}{b}",
    st.sampled_from("0123456789") | st.text(max_size=2), attachments, namespaces, ack_ids,
    sio_bodies,
)
eio_packets = st.one_of(
    sio_packets,
    st.builds(lambda t, rest: t + rest, st.sampled_from("0123456789bx"), st.text(max_size=30)),
    st.binary(max_size=60).map(lambda b: "b" + b.hex()),
    st.text(max_size=60),
)
polling_bodies = st.one_of(
    st.lists(eio_packets, min_size=1, max_size=5).map(lambda ps: "\x1e".join(ps).encode()),
    st.binary(max_size=200),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
)
ws_frames = st.one_of(eio_packets, st.binary(max_size=200),
                      st.sampled_from(["2", "3", "5", "6", "1", "", "2probe", "451-[\"echo\"]"]))


# Polling POSTs


async def _post_one(http: aiohttp.ClientSession, url: str, body: bytes, join: bool) -> str:
    try:
        sid = (await handshake(http, url))["sid"]
        if join:
            await post(http, url, sid, "40")
        async with http.post(f"{url}{EIO_PATH}?EIO=4&transport=polling&sid={sid}",
                             data=body, timeout=aiohttp.ClientTimeout(ANSWER_TIMEOUT_S)) as resp:
            await resp.read()
            return str(resp.status)
    except TimeoutError:
        return "no answer"
    except aiohttp.ClientError as exc:
        return type(exc).__name__


@given(batch=st.lists(st.tuples(polling_bodies, st.booleans()), min_size=1, max_size=8))
def _polling_batches(fuzzed: Fuzzed, batch: list[tuple[bytes, bool]]) -> None:
    async def go() -> None:
        async with aiohttp.ClientSession() as http:
            outcomes = await asyncio.gather(*(_post_one(http, fuzzed.cluster.url, body, join)
                                              for body, join in batch))
        for (body, _), outcome in zip(batch, outcomes, strict=True):
            note("polling", outcome, repr(body))

    asyncio.run(go())


def test_polling_garbage(fuzzed: Fuzzed) -> None:
    fuzz_settings(60)(_polling_batches)(fuzzed)
    fuzzed.check("polling")
    # The workers logged one line per malformed packet at most, and counted them all.
    # (a heartbeat carries the counters)
    eventually(lambda: sum(w["guards"].get("malformed_input", 0)
                           for w in fuzzed.cluster.status()["workers"]),
               what="a malformed_input count in /status")


# WebSocket frames


@given(frames=st.lists(ws_frames, min_size=1, max_size=10), join=st.booleans())
def _ws_sessions(fuzzed: Fuzzed, frames: list[str | bytes], join: bool) -> None:
    url = fuzzed.cluster.url.replace("http", "ws", 1) + f"{EIO_PATH}?EIO=4&transport=websocket"

    async def go() -> str:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(url, max_msg_size=0)
            opened = await ws.receive(timeout=5)
            assert str(opened.data).startswith("0{"), opened
            if join:
                await ws.send_str("40")
            for frame in frames:
                if ws.closed:
                    break
                try:
                    if isinstance(frame, bytes):
                        await ws.send_bytes(frame)
                    else:
                        await ws.send_str(frame)
                except (aiohttp.ClientError, ConnectionError):
                    break  # the server closed it while we were sending
                COUNTS["websocket"] += 1
            # Whatever the server answers or does, it answers quickly or not at all.
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                while not ws.closed:
                    msg = await ws.receive(timeout=0.2)
                    if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                                    aiohttp.WSMsgType.ERROR):
                        break
            closed_by_server = ws.closed
            await ws.close()
            return "closed by server" if closed_by_server else "open"

    OUTCOMES["websocket"][asyncio.run(go())] += 1


def test_websocket_garbage(fuzzed: Fuzzed) -> None:
    fuzz_settings(40)(_ws_sessions)(fuzzed)
    fuzzed.check("websocket")


# Random sids


sids = st.one_of(
    st.text(max_size=40),
    st.builds(mint_sid, st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)),
    st.builds(lambda s, g: mint_sid(s, g)[:-1] + "!", st.integers(0, 3), st.integers(0, 3)),
    st.sampled_from(["", "0", "..", "0.0.", "%00", "a" * 5000]),
)


@given(batch=st.lists(sids, min_size=1, max_size=6))
def _sid_batches(fuzzed: Fuzzed, batch: list[str]) -> None:
    base = fuzzed.cluster.url

    async def one(http: aiohttp.ClientSession, sid: str, how: int) -> str:
        query = {"EIO": "4", "transport": "websocket" if how == 2 else "polling", "sid": sid}
        timeout = aiohttp.ClientTimeout(ANSWER_TIMEOUT_S)
        try:
            if how == 2:
                ws = await http.ws_connect(base + EIO_PATH, params=query,
                                           timeout=aiohttp.ClientWSTimeout(ws_close=1.0))
                await ws.close()
                return "101"
            method = http.get if how == 0 else http.post
            async with method(base + EIO_PATH, params=query, data=b"40" if how else None,
                              timeout=timeout) as resp:
                await resp.read()
                return str(resp.status)
        except aiohttp.WSServerHandshakeError as exc:
            return str(exc.status)
        except TimeoutError:
            return "no answer"
        except (aiohttp.ClientError, ValueError) as exc:
            return type(exc).__name__

    async def go() -> None:
        async with aiohttp.ClientSession() as http:
            jobs = [(sid, how) for sid in batch for how in range(3)]
            outcomes = await asyncio.gather(*(one(http, sid, how) for sid, how in jobs))
        for (sid, how), outcome in zip(jobs, outcomes, strict=True):
            note("random sids", outcome, f"{how}:{sid}")
            if outcome in ("200", "101"):
                FINDINGS.append(f"random sids: a made-up sid {sid!r} was accepted ({how})")

    asyncio.run(go())


def test_random_sids(fuzzed: Fuzzed) -> None:
    fuzz_settings(40)(_sid_batches)(fuzzed)
    fuzzed.check("random sids")


# Raw request heads


tokens = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12)
header_names = st.sampled_from(["Host", "Content-Length", "Transfer-Encoding", "Connection",
                                "Upgrade", "Sec-WebSocket-Key", "Sec-WebSocket-Version",
                                "Origin", "X-Forwarded-For", "Expect"]) | tokens
header_values = st.sampled_from(["", "0", "-1", "99999999999999999999", "chunked", "upgrade",
                                 "websocket", "keep-alive, Upgrade", "13", "100-continue",
                                 "dGhlIHNhbXBsZSBub25jZQ=="]) | st.text(max_size=30)
paths = st.sampled_from(["/socket.io/", "/socket.io/?EIO=4&transport=polling",
                         "/socket.io/?EIO=4&transport=websocket", "/pid", "*", "",
                         "/socket.io/?EIO=4&transport=polling&sid=" + "x" * 100,
                         "http://evil.test/"]) | st.text(max_size=40)
request_heads = st.one_of(
    st.builds(
        lambda m, p, v, hs, eol: (f"{m} {p} {v}{eol}" + "".join(f"{k}: {val}{eol}"
                                                              for k, val in hs) + eol),
        st.sampled_from(["GET", "POST", "PUT", "OPTIONS", "CONNECT", "get"]) | tokens,
        paths,
        st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/9", "", "HTTP/1.1 x"]),
        st.lists(st.tuples(header_names, header_values), max_size=6),
        st.sampled_from(["\r\n", "\n", "\r\n", "\r\n"]),
    ).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.binary(min_size=1, max_size=300).map(lambda b: b + b"\r\n\r\n"),
)


async def _raw_one(port: int, head: bytes) -> str:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as exc:
        return f"connect {type(exc).__name__}"
    try:
        writer.write(head)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(64), ANSWER_TIMEOUT_S)
        if not data:
            return "closed"
        status = data.split(b" ", 2)[1:2]
        return status[0].decode(errors="replace") if status else "garbage answer"
    except TimeoutError:
        return "no answer"
    except OSError as exc:
        return type(exc).__name__
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


@given(batch=st.lists(request_heads, min_size=1, max_size=10))
def _raw_batches(fuzzed: Fuzzed, batch: list[bytes]) -> None:
    async def go() -> None:
        outcomes = await asyncio.gather(*(_raw_one(fuzzed.cluster.port, h) for h in batch))
        for head, outcome in zip(batch, outcomes, strict=True):
            note("raw heads", outcome, repr(head))

    asyncio.run(go())


def test_raw_request_heads(fuzzed: Fuzzed) -> None:
    fuzz_settings(40)(_raw_batches)(fuzzed)
    fuzzed.check("raw heads")


# Oversize input


def test_oversize(fuzzed: Fuzzed) -> None:
    url = fuzzed.cluster.url
    port = fuzzed.cluster.port

    async def go() -> None:
        async with aiohttp.ClientSession() as http:
            # A polling body over max_message_bytes: 413 from the balancer.
            for size in (MAX_MESSAGE + 1, 4 * MAX_MESSAGE):
                sid = (await handshake(http, url))["sid"]
                body = b"42" + json.dumps(["echo", "x" * size]).encode()
                async with http.post(f"{url}{EIO_PATH}?EIO=4&transport=polling&sid={sid}",
                                     data=body) as resp:
                    await resp.read()
                    note("oversize", str(resp.status), f"polling body {len(body)}")
                    assert resp.status == 413, resp.status
            # A WebSocket message over it: the worker closes the connection (1009).
            for frame in ("4" + "x" * (MAX_MESSAGE + 1), b"\x00" * (2 * MAX_MESSAGE)):
                ws_url = url.replace("http", "ws", 1) + f"{EIO_PATH}?EIO=4&transport=websocket"
                ws = await http.ws_connect(ws_url)
                await ws.receive(timeout=5)
                await ws.send_str("40")
                if isinstance(frame, bytes):
                    await ws.send_bytes(frame)
                else:
                    await ws.send_str(frame)
                closed = None
                with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                    while True:
                        msg = await ws.receive(timeout=5)
                        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                            closed = ws.close_code
                            break
                await ws.close()
                note("oversize", f"ws close {closed}", "ws message")
                assert closed == 1009, closed
        # A head over max_header_bytes and one with too many headers.
        for head in (b"GET /pid HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
                     b"GET /pid HTTP/1.1\r\nHost: x\r\n"
                     + b"".join(b"X-%d: 1\r\n" % i for i in range(150)) + b"\r\n",
                     b"GET /" + b"p" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"):
            outcome = await _raw_one(port, head)
            note("oversize", outcome, "head")
            assert outcome in ("400", "413", "414", "431", "closed"), outcome

    asyncio.run(go())
    fuzzed.check("oversize")


# Slowloris


async def _trickle(port: int, head: bytes, every_s: float, first: bytes = b"",
                  give_up_s: float = 10.0) -> tuple[str, float]:
    """Send ``first`` at once, then ``head`` one byte per ``every_s``; the answer and when.

    Gives up (``"still open"``) once ``give_up_s`` have passed without an answer.
    """
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = b""
    try:
        if first:
            writer.write(first)
            answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            length = int(answer.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            started = time.monotonic()

        async def read() -> bytes:
            return await reader.read(4096)

        reading = asyncio.create_task(read())
        for byte in head:
            if reading.done():
                break
            if time.monotonic() - started > give_up_s:
                reading.cancel()
                return "still open", time.monotonic() - started
            with contextlib.suppress(OSError):
                writer.write(bytes([byte]))
                await writer.drain()
            await asyncio.wait([reading], timeout=every_s)
        data = await asyncio.wait_for(reading, 10)
        rest = data
        while rest:  # read to EOF: the server must close
            rest = await asyncio.wait_for(reader.read(4096), 10)
        status = data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/") else "closed"
        return status, time.monotonic() - started
    except TimeoutError:
        return "not closed", time.monotonic() - started
    except OSError:
        return "reset", time.monotonic() - started
    finally:
        writer.close()


def test_slowloris(fuzzed: Fuzzed) -> None:
    port = fuzzed.cluster.port
    head = b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: 127.0.0.1\r\n" + (
        b"X-Padding: " + b"p" * 40 + b"\r\n") * 3 + b"\r\n"

    async def go() -> None:
        conns = [_trickle(port, head, 0.2) for _ in range(int(30 * SCALE))]
        started = time.monotonic()
        results = await asyncio.gather(*conns)
        elapsed = time.monotonic() - started
        for status, after in results:
            note("slowloris", status, f"after {after:.1f}s")
        assert {s for s, _ in results} == {"408"}, results
        assert all(HEAD_TIMEOUT_S * 0.9 <= after < HEAD_TIMEOUT_S + 2 for _, after in results)
        assert elapsed < HEAD_TIMEOUT_S + 3
        # The same trickle as the *second* request on a kept-alive connection: the
        # master's peek only times the first head; record what happens to the rest.
        first = b"GET /pid HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        second = b"GET /pid HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * 20 + b"\r\n"
        status, after = await _trickle(port, second, 0.25, first=first,
                                       give_up_s=3 * HEAD_TIMEOUT_S)
        note("slowloris", f"keep-alive {status}", "second request")
        if status != "408":
            FINDINGS.append(f"slowloris: a second request head trickled on a kept-alive "
                            f"connection was not refused: {status} after {after:.1f}s "
                            f"(header_timeout_s={HEAD_TIMEOUT_S})")

    asyncio.run(go())
    fuzzed.check("slowloris")


# PROXY protocol headers, on a cluster where the protocol is mandatory; the
# well-behaved clients reach it through a real HAProxy (send-proxy-v2).

_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_ports = st.integers(0, 65535).map(str) | st.sampled_from(["", "-1", "65536", "08", "x"])
_addresses = (st.ip_addresses().map(str)
              | st.sampled_from(["1.2.3", "::ffff:1.2.3.4", "fe80::1%eth0", "", "a" * 60]))
proxy_headers = st.one_of(
    st.builds(
        lambda fam, src, dst, sp, dp, eol: f"PROXY {fam} {src} {dst} {sp} {dp}{eol}".encode(),
        st.sampled_from(["TCP4", "TCP6", "UNKNOWN", "tcp4", "UDP4", ""]),
        _addresses, _addresses, _ports, _ports, st.sampled_from(["\r\n", "\n", "", "\r\n\r\n"]),
    ),
    st.builds(
        lambda cmd, fam, length, body: (_V2_SIGNATURE + bytes([cmd, fam])
                                        + length.to_bytes(2, "big") + body),
        st.sampled_from([0x20, 0x21, 0x22, 0x11, 0x31]) | st.integers(0, 255),
        st.sampled_from([0x00, 0x11, 0x12, 0x21, 0x22, 0x31]) | st.integers(0, 255),
        st.integers(0, 80) | st.just(65535),
        st.binary(max_size=60),
    ),
    st.binary(max_size=120),
)
_GET_PID = b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    env = {"SIOCLUSTER_LIMITS_HEADER_TIMEOUT_S": str(HEAD_TIMEOUT_S),
           "SIOCLUSTER_BALANCER_PROXY_PROTOCOL": "true"}
    workdir = tmp_path_factory.mktemp("fuzz-proxy")
    with start_cluster(workers=2, env=env, tmp_path=workdir) as cluster, \
            haproxy_front(cluster.port, workdir) as (_v1, v2):
        canary = Canary(f"http://127.0.0.1:{v2}")
        canary.connect()
        try:
            yield Fuzzed(cluster, canary)
        finally:
            canary.close()


@given(batch=st.lists(proxy_headers, min_size=1, max_size=10))
def _proxy_batches(fuzzed: Fuzzed, batch: list[bytes]) -> None:
    async def go() -> None:
        outcomes = await asyncio.gather(
            *(_raw_one(fuzzed.cluster.port, h + _GET_PID) for h in batch))
        for header, outcome in zip(batch, outcomes, strict=True):
            note("proxy headers", outcome, repr(header))

    asyncio.run(go())


def test_proxy_protocol_headers(proxied: Fuzzed) -> None:
    fuzz_settings(30)(_proxy_batches)(proxied)
    proxied.check("proxy headers")
    assert OUTCOMES["proxy headers"]["400"] > 0  # refusals are answered, not dropped
