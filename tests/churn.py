"""Session churn: many short-lived clients that open sessions and go away.

A raw asyncio HTTP/1.1 + WebSocket client, so every connection ends exactly
as a client process's would (its FIN, or an abort), with an optional PROXY v1
header in front.  Used by the leak tests (tests/integration/test_churn.py)
and by ``python -m bench --soak``.

Session shapes, mixed in every round:

* ``upgrade``: polling handshake, namespace connect and a poll on one
  keep-alive connection, then a WebSocket upgrade on a second one, a probe
  and an event; both connections closed by the client.
* ``polling``: handshake, connect, poll and an event by polling, then an
  Engine.IO close packet (or, for every fourth, the client just vanishes).
* ``shared``: several sessions' requests, interleaved, over one keep-alive
  connection (a browser or nginx does this), then the client closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import struct
from dataclasses import dataclass, field

__all__ = ["ChurnResult", "churn", "close_wait", "master_fds", "process_fds", "rss_bytes"]

EIO = "/socket.io/?EIO=4"


@dataclass
class ChurnResult:
    sessions: int = 0
    failures: int = 0
    errors: list[str] = field(default_factory=list)

    def fail(self, why: str) -> None:
        self.failures += 1
        if len(self.errors) < 10:
            self.errors.append(why)


class _Conn:
    """One client connection: sequential requests, kept alive."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, proxy_from: str | None) -> _Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        if proxy_from is not None:
            sport = random.randint(1024, 65000)
            writer.write(f"PROXY TCP4 {proxy_from} 127.0.0.1 {sport} {port}\r\n".encode())
        return cls(reader, writer)

    async def request(self, method: str, path: str, body: bytes = b"",
                      headers: str = "") -> tuple[int, bytes]:
        head = (f"{method} {path} HTTP/1.1\r\nHost: churn\r\n{headers}"
                f"Content-Length: {len(body)}\r\n\r\n")
        self.writer.write(head.encode() + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        return status, await self.reader.readexactly(length) if length else b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()

    def abort(self) -> None:
        self.writer.transport.abort()


def _frame(text: str) -> bytes:
    data = text.encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    assert len(data) < 126
    return bytes([0x81, 0x80 | len(data)]) + mask + masked


async def _read_frame(reader: asyncio.StreamReader) -> str:
    _first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        length = struct.unpack("!H", await reader.readexactly(2))[0]
    elif length == 127:
        length = struct.unpack("!Q", await reader.readexactly(8))[0]
    return (await reader.readexactly(length)).decode()


async def _open_session(conn: _Conn, result: ChurnResult) -> str | None:
    status, body = await conn.request("GET", f"{EIO}&transport=polling")
    if status != 200 or not body.startswith(b"0"):
        result.fail(f"handshake {status} {body[:80]!r}")
        return None
    sid = str(json.loads(body[1:])["sid"])
    status, _ = await conn.request("POST", f"{EIO}&transport=polling&sid={sid}", b"40")
    if status != 200:
        result.fail(f"connect {status}")
        return None
    status, body = await conn.request("GET", f"{EIO}&transport=polling&sid={sid}")
    if status != 200 or not body.startswith(b"40"):
        result.fail(f"poll {status} {body[:80]!r}")
        return None
    return sid


async def _upgrade(port: int, proxy_from: str | None, result: ChurnResult) -> None:
    conn = await _Conn.open(port, proxy_from)
    try:
        sid = await _open_session(conn, result)
    finally:
        await conn.close()
    if sid is None:
        return
    ws = await _Conn.open(port, proxy_from)
    try:
        key = "dGhlIHNhbXBsZSBub25jZQ=="
        ws.writer.write((f"GET {EIO}&transport=websocket&sid={sid} HTTP/1.1\r\nHost: churn\r\n"
                         f"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                         f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                         ).encode())
        head = await ws.reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            result.fail(f"upgrade {head[:40]!r}")
            return
        ws.writer.write(_frame("2probe"))
        if (reply := await _read_frame(ws.reader)) != "3probe":
            result.fail(f"probe {reply!r}")
            return
        ws.writer.write(_frame("5") + _frame('421["echo","churn"]'))
        while (reply := await _read_frame(ws.reader)) in ("2", "6"):
            pass
        if not reply.startswith("431"):
            result.fail(f"ack {reply!r}")
            return
        result.sessions += 1
    finally:
        await ws.close()


async def _polling(port: int, proxy_from: str | None, vanish: bool,
                   result: ChurnResult) -> None:
    conn = await _Conn.open(port, proxy_from)
    try:
        sid = await _open_session(conn, result)
        if sid is None:
            return
        url = f"{EIO}&transport=polling&sid={sid}"
        status, _ = await conn.request("POST", url, b'421["echo","churn"]')
        status2, body = await conn.request("GET", url)
        if status != 200 or status2 != 200 or not body.startswith(b"431"):
            result.fail(f"polling event {status} {status2} {body[:80]!r}")
            return
        if vanish:
            conn.abort()
        else:
            await conn.request("POST", url, b"1")
        result.sessions += 1
    finally:
        await conn.close()


async def _shared(port: int, proxy_from: str | None, count: int, result: ChurnResult) -> None:
    conn = await _Conn.open(port, proxy_from)
    try:
        sids = [sid for _ in range(count) if (sid := await _open_session(conn, result))]
        for sid in sids:
            status, _ = await conn.request("POST", f"{EIO}&transport=polling&sid={sid}", b"1")
            if status != 200:
                result.fail(f"shared close {status}")
                continue
            result.sessions += 1
    finally:
        await conn.close()


async def churn(port: int, sessions: int, *, concurrency: int = 32,
                proxy_from: str | None = None, upgrade: bool = True) -> ChurnResult:
    """Open and end about ``sessions`` sessions through ``port``; count failures."""
    result = ChurnResult()
    semaphore = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with semaphore:
            try:
                async with asyncio.timeout(30):
                    kind = i % 4
                    if kind == 0 and upgrade:
                        await _upgrade(port, proxy_from, result)
                    elif kind == 1:
                        await _shared(port, proxy_from, 3, result)
                    else:
                        await _polling(port, proxy_from, vanish=i % 8 == 2, result=result)
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
                result.fail(f"{type(exc).__name__}: {exc}")

    # ``shared`` clients open three sessions each.
    tasks = [one(i) for i in range(max(1, sessions * 4 // 6))]
    await asyncio.gather(*tasks)
    return result


def process_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def master_fds(pid: int) -> int:
    return process_fds(pid)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def close_wait(port: int) -> int:
    """Sockets on local ``port`` in CLOSE-WAIT (the peer closed; we have not)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                if local_port == port and fields[3] == "08":  # TCP_CLOSE_WAIT
                    count += 1
    return count

