"""The control channel between the master and one worker.

One ``AF_UNIX`` stream socketpair per worker, inherited by the worker as a file
descriptor.  Each message is a 4-byte big-endian length followed by a JSON
object tagged by ``type`` (msgspec; no pickle).  The master sends
:class:`Configure` first (the config travels here, not on the command line,
so secrets never show in ``ps``), then at most :class:`Drain`.  The worker
answers :class:`Ready` or :class:`BootFailed`, then a :class:`Heartbeat` from
its event loop every ``heartbeat_interval_s``: a blocked loop sends nothing
and is caught by the master's timeout.  With the ``local`` backend, cluster
singletons' leases travel here too (:class:`LeaseRequest` / :class:`LeaseReply`
/ :class:`LeaseRelease`; the rules are in :mod:`worker.lease`).

EOF on this socket means the other side is gone: a worker exits when it reads
EOF, so no worker outlives its master, even a SIGKILLed one.

:class:`FrameDecoder` is the pure part (bytes in, messages out); the asyncio
helpers at the bottom are a thin shell around it.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import msgspec

__all__ = [
    "BOOT_FAILED_EXIT",
    "BootFailed",
    "Configure",
    "ControlMessage",
    "Drain",
    "FrameDecoder",
    "FrameError",
    "Heartbeat",
    "LeaseRelease",
    "LeaseReply",
    "LeaseRequest",
    "LeaseView",
    "Ready",
    "SingletonReport",
    "encode",
    "read_message",
]

# Reserved exit code: the app could not be imported or built (gunicorn uses 3 too).
BOOT_FAILED_EXIT = 3

MAX_FRAME_BYTES = 16 * 1024 * 1024
_LEN = struct.Struct(">I")


class Configure(msgspec.Struct, tag="configure", frozen=True):
    slot: int
    generation: int
    socket_path: str
    runtime_dir: str
    app: str
    config: dict[str, dict[str, Any]]
    master_pid: int


class Drain(msgspec.Struct, tag="drain", frozen=True):
    timeout_s: float


class Ready(msgspec.Struct, tag="ready", frozen=True):
    pid: int
    engineio_path: str
    ping_interval_s: float
    ping_timeout_s: float


class BootFailed(msgspec.Struct, tag="boot_failed", frozen=True):
    error: str
    traceback: str


class LeaseView(msgspec.Struct, frozen=True):
    """A singleton's tenure: who holds it, its fencing token, since when (wall clock)."""

    host: str
    slot: int
    pid: int
    token: int
    since: float


class SingletonReport(msgspec.Struct, frozen=True):
    """One singleton as a worker sees it, in each heartbeat."""

    held: bool
    current: LeaseView | None = None
    errors: int = 0


class LeaseRequest(msgspec.Struct, tag="lease_request", frozen=True):
    """Worker -> master: acquire or renew the singleton lease ``name`` (local backend)."""

    name: str
    seq: int
    # False once the worker drains: it may renew but not acquire.
    eligible: bool = True


class LeaseReply(msgspec.Struct, tag="lease_reply", frozen=True):
    name: str
    seq: int
    granted: bool
    current: LeaseView | None = None


class LeaseRelease(msgspec.Struct, tag="lease_release", frozen=True):
    """Worker -> master: the singleton's task has finished; the lease is free."""

    name: str
    token: int


class Heartbeat(msgspec.Struct, tag="heartbeat", frozen=True):
    connections: int
    handshakes_total: int
    loop_lag_s: float
    messages_total: int = 0
    adapter: dict[str, Any] = {}
    guards: dict[str, int] = {}
    # Sessions per client address, for the addresses whose count changed since
    # the last heartbeat (0: none left); only with [limits] max_sessions_per_ip.
    sessions_by_ip: dict[str, int] = {}
    singletons: dict[str, SingletonReport] = {}


ControlMessage = (
    Configure | Drain | Ready | BootFailed | Heartbeat | LeaseRequest | LeaseReply | LeaseRelease
)

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(ControlMessage)


class FrameError(Exception):
    """The peer sent something that is not a valid control frame."""


def encode(message: ControlMessage) -> bytes:
    body = _encoder.encode(message)
    return _LEN.pack(len(body)) + body


class FrameDecoder:
    """Accumulate bytes, yield complete messages."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[ControlMessage]:
        self._buffer += data
        out: list[ControlMessage] = []
        while len(self._buffer) >= _LEN.size:
            (length,) = _LEN.unpack_from(self._buffer)
            if length > MAX_FRAME_BYTES:
                raise FrameError(f"frame of {length} bytes exceeds the limit")
            end = _LEN.size + length
            if len(self._buffer) < end:
                break
            body = bytes(self._buffer[_LEN.size : end])
            del self._buffer[:end]
            try:
                out.append(_decoder.decode(body))
            except msgspec.DecodeError as exc:
                raise FrameError(f"invalid control message: {exc}") from None
        return out


async def read_message(reader: asyncio.StreamReader) -> ControlMessage | None:
    """Read one message; None on a clean EOF."""
    try:
        head = await reader.readexactly(_LEN.size)
    except asyncio.IncompleteReadError:
        return None
    (length,) = _LEN.unpack(head)
    if length > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {length} bytes exceeds the limit")
    try:
        body = await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        return None
    try:
        message: ControlMessage = _decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise FrameError(f"invalid control message: {exc}") from None
    return message
