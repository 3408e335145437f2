"""The control channel between the master and one worker.

One ``AF_UNIX`` stream socketpair per worker, inherited by the worker as a file
descriptor.  Each message is a 4-byte big-endian length followed by a JSON
object tagged by ``type`` (msgspec; no pickle).  The master sends
:class:`Configure` first (the config travels here, not on the command line,
so secrets never show in ``ps``), then at most :class:`Drain`, and any number
of :class:`Emit` (``POST /emit`` on the admin listener), each answered by an
:class:`EmitDone` once handed to the adapter.  The worker
answers :class:`Ready` or :class:`BootFailed`, then a :class:`Heartbeat` from
its event loop every ``heartbeat_interval_s``: a blocked loop sends nothing
and is caught by the master's timeout.  With the ``local`` backend, cluster
singletons' leases travel here too (:class:`LeaseRequest` / :class:`LeaseReply`
/ :class:`LeaseRelease`; the rules are in :mod:`worker.lease`).

EOF on this socket means the other side is gone: a worker exits when it reads
EOF, so no worker outlives its master, even a SIGKILLed one.

The framing is :mod:`worker.framing`'s, shared with the local adapter:
:class:`FrameDecoder` is the pure part (bytes in, messages out), and
:class:`MessageReader` the thin asyncio shell around the same decoder.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from .config import WorkerConfig
from .framing import FrameDecoder as _Frames
from .framing import FrameReader, FrameTooLarge, TruncatedFrame, pack

__all__ = [
    "BOOT_FAILED_EXIT",
    "AdapterFigures",
    "AdapterStatus",
    "BootFailed",
    "Configure",
    "ControlMessage",
    "Drain",
    "Emit",
    "EmitDone",
    "ExternalStatus",
    "FrameDecoder",
    "FrameError",
    "Heartbeat",
    "LeaseRelease",
    "LeaseReply",
    "LeaseRequest",
    "LeaseView",
    "LogAppend",
    "LogDeliver",
    "MessageReader",
    "Ready",
    "RestoreReply",
    "RestoreRequest",
    "SessionClosed",
    "SessionState",
    "SingletonReport",
    "TransportStatus",
    "decode",
    "encode",
]

# Reserved exit code: the app could not be imported or built (gunicorn uses 3 too).
BOOT_FAILED_EXIT = 3

MAX_FRAME_BYTES = 16 * 1024 * 1024


class Configure(msgspec.Struct, tag="configure", frozen=True):
    slot: int
    generation: int
    socket_path: str
    runtime_dir: str
    app: str
    config: WorkerConfig
    master_pid: int


class Drain(msgspec.Struct, tag="drain", frozen=True):
    timeout_s: float
    # Close the sessions spread over this long (0: all at once, as on a full stop).
    spread_s: float = 0.0


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


class TransportStatus(msgspec.Struct, frozen=True, kw_only=True):
    """A cross-worker transport's own figures (``transport`` in /status).

    Each backend fills the fields it has; the others stay unset and are left
    out of /status.
    """

    sharded: bool | UnsetType | None = UNSET  # redis: sharded pub/sub (None: not known yet)
    rooms_subscribed: int | UnsetType = UNSET  # redis: dynamic room channels held
    peers_connected: int | UnsetType = UNSET  # local: streams open to peers
    transport_sent: int
    transport_dropped: int | UnsetType = UNSET  # local
    undeliverable_remote: int | UnsetType = UNSET  # redis, amqp: directed, reached nobody
    transport_errors: int
    buffered: int | UnsetType = UNSET  # redis, amqp: frames waiting in the outage buffer
    buffered_bytes: int
    overflowed: int | UnsetType = UNSET
    overflowed_bytes: int | UnsetType = UNSET
    expired: int | UnsetType = UNSET
    outages: int | UnsetType = UNSET
    reconnects: int | UnsetType = UNSET

    def count(self, name: str) -> int:
        """A figure by name, 0 when this backend does not report it."""
        value = getattr(self, name)
        return value if isinstance(value, int) else 0


class ExternalStatus(msgspec.Struct, frozen=True, kw_only=True):
    """A way in from outside the cluster (``external`` in /status), by source name."""

    channel: str | UnsetType = UNSET  # redis-emitter: the pub/sub channel
    queue: str | UnsetType = UNSET  # amqp: the emit queue
    state: str  # connected, degraded (amqp: also waiting)
    error: str | UnsetType = UNSET  # amqp: the last connection error
    received: int
    errors: int
    reconnects: int


class AdapterFigures(msgspec.Struct, frozen=True):
    """What a running cross-worker adapter reports.  Each int becomes a gauge
    ``siocluster_adapter_<name>`` per worker slot on /metrics."""

    node: str
    peers: list[str]
    server_count: int
    sent: int
    received: int
    heartbeats_sent: int
    heartbeats_received: int
    dropped: int
    undeliverable: int
    duplicates: int
    lost: int
    skipped: int
    errors: int
    handler_errors: int
    requests_pending: int
    requests_timed_out: int
    buffered_bytes: int
    transport: TransportStatus
    external: dict[str, ExternalStatus]
    emits: dict[str, int]  # by source: internal, http, redis-emitter, amqp
    external_refused: dict[str, int]  # by "source/reason"


class AdapterStatus(msgspec.Struct, frozen=True):
    """The adapter in a heartbeat: its backend and state, and its figures when it runs
    (none with ``backend = "none"``, whose state is ``disabled``)."""

    backend: str
    state: str  # connecting, connected, degraded, closed, disabled
    figures: AdapterFigures | None = None

    def document(self) -> dict[str, Any]:
        """The flat object /status shows for this worker's adapter."""
        flat: dict[str, Any] = {"backend": self.backend, "state": self.state}
        if self.figures is not None:
            flat.update(msgspec.to_builtins(self.figures))
        return flat

    def gauges(self) -> dict[str, int]:
        """The figures /metrics exports, by name (``siocluster_adapter_<name>``)."""
        if self.figures is None:
            return {}
        return {
            name: value
            for name, value in msgspec.structs.asdict(self.figures).items()
            if isinstance(value, int) and not isinstance(value, bool)
        }


class LatencyReport(msgspec.Struct, frozen=True):
    """A cumulative latency histogram since the worker started: ``counts`` per
    bucket of :data:`balancer.stats.LATENCY_BUCKETS_S` (and one over), their sum."""

    counts: list[int]
    total_s: float


class Heartbeat(msgspec.Struct, tag="heartbeat", frozen=True):
    connections: int
    handshakes_total: int
    loop_lag_s: float
    messages_total: int = 0
    adapter: AdapterStatus | None = None  # None: no adapter installed (yet)
    guards: dict[str, int] = {}
    # Sessions per client address, for the addresses whose count changed since
    # the last heartbeat (0: none left); only with [limits] max_sessions_per_ip.
    sessions_by_ip: dict[str, int] = {}
    singletons: dict[str, SingletonReport] = {}
    # Emits by source ("internal", "redis-emitter", "http", "amqp") since start,
    # and external messages refused, by "source/reason" ("redis-emitter/pickle").
    emits: dict[str, int] = {}
    external_refused: dict[str, int] = {}
    # Connection-state recovery, this worker's side: recovered, replayed, not_recovered/<reason>.
    recovery: dict[str, int] = {}
    # Polling connections the master passed (worker/gate.py): requests served,
    # connections given back, returns that failed (answered 503), refusals.
    gate: dict[str, int] = {}
    # ... and how long its answers took, by kind ("handshake", "poll", "send").
    gate_latency: dict[str, LatencyReport] = {}


Room = str | int


class Emit(msgspec.Struct, tag="emit", frozen=True):
    """Emit to the worker's clients (``broadcast=False``) or through the adapter."""

    id: int
    event: str
    args: msgspec.Raw  # a JSON array: the emit's arguments, passed through undecoded
    namespace: str
    rooms: list[Room]  # empty: the whole namespace
    except_rooms: list[Room]
    broadcast: bool


class EmitDone(msgspec.Struct, tag="emit_done", frozen=True):
    id: int
    error: str = ""  # empty: handed to the adapter (or delivered, without one)


# Connection-state recovery (worker.recovery): the master holds the sessions and
# the packet log, and sequences every recoverable emit.


class LogAppend(msgspec.Struct, tag="log_append", frozen=True):
    """Worker -> master: an emit to number, keep and send to every worker."""

    nsp: str
    rooms: list[Room]
    exclude: list[Room]
    payload: bytes  # msgpack [event, args]


class LogDeliver(msgspec.Struct, tag="log_deliver", frozen=True):
    """Master -> worker: deliver this emit to your sockets, ``offset`` appended."""

    offset: str
    nsp: str
    rooms: list[Room]
    exclude: list[Room]
    payload: bytes


class SessionState(msgspec.Struct, tag="session_state", frozen=True):
    """Worker -> master: a session's current sid, rooms and data (write-through)."""

    pid: str
    sid: str
    nsp: str
    rooms: list[Room]
    data: bytes  # msgpack of the python-socketio session dict


class SessionClosed(msgspec.Struct, tag="session_closed", frozen=True):
    pid: str
    recoverable: bool


class RestoreRequest(msgspec.Struct, tag="restore_request", frozen=True):
    rid: int
    pid: str
    offset: str | None
    nsp: str


class RestoreReply(msgspec.Struct, tag="restore_reply", frozen=True):
    rid: int
    pid: str
    reason: str = ""  # empty: recovered
    sid: str = ""
    rooms: list[Room] = []
    data: bytes = b""
    missed: list[LogDeliver] = []


ControlMessage = (
    Configure | Drain | Ready | BootFailed | Heartbeat | LeaseRequest | LeaseReply | LeaseRelease
    | Emit | EmitDone | LogAppend | LogDeliver | SessionState | SessionClosed | RestoreRequest
    | RestoreReply
)

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(ControlMessage)


class FrameError(Exception):
    """The peer sent something that is not a valid control frame."""


def encode(message: ControlMessage) -> bytes:
    return pack(_encoder.encode(message))


def decode(body: bytes) -> ControlMessage:
    try:
        message: ControlMessage = _decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise FrameError(f"invalid control message: {exc}") from None
    return message


class FrameDecoder:
    """Accumulate bytes, return complete messages (the pure part)."""

    def __init__(self) -> None:
        self._frames = _Frames(MAX_FRAME_BYTES)

    def feed(self, data: bytes) -> list[ControlMessage]:
        try:
            bodies = self._frames.feed(data)
        except FrameTooLarge as exc:
            raise FrameError(str(exc)) from None
        return [decode(body) for body in bodies]


class MessageReader:
    """Control messages from a stream, one per :meth:`next`; None at EOF."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._frames = FrameReader(reader, MAX_FRAME_BYTES)

    async def next(self) -> ControlMessage | None:
        try:
            body = await self._frames.next()
        except FrameTooLarge as exc:
            raise FrameError(str(exc)) from None
        except TruncatedFrame:
            return None  # the peer died mid-frame: the same as EOF
        return None if body is None else decode(body)
