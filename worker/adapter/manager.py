"""The client manager that makes one python-socketio app span every worker.

Theory of operation
-------------------

:class:`ClusterManager` subclasses python-socketio's ``AsyncManager`` and
overrides its public hooks (``emit``, ``can_disconnect``, ``enter_room``,
``leave_room``, ``close_room``, ``initialize``), so ``sio.emit``,
``sio.enter_room``, ``sio.disconnect``, ``sio.call`` ... work unchanged no
matter which worker holds the socket.  It talks to the other workers through a
:class:`~.transport.Transport` (``local`` Unix-socket mesh or ``redis``) in
:mod:`.envelope` frames.

Addressing.  A target is a tuple of rooms (a sid is a room too; empty means the
whole namespace) minus a tuple of *except* rooms (``skip_sid`` is read as
except-rooms).  Every operation first applies to this worker's sockets
directly, then goes to the peers that may hold the rest:

* targets that are sids of this worker: nothing leaves the process;
* sids whose owner the transport can name (``local``: the sid prefix is the
  owner's node id): one directed frame per owner; a sid whose owner is gone
  is counted as undeliverable;
* anything else (room names, the whole namespace, ``redis`` sids): one
  broadcast whose header lists the rooms, so receivers that hold none of them
  drop it after decoding the header only.

Acks.  An emit with a callback to a remote socket registers the callback here
under an ack id that travels in the frame.  The owner emits with a callback
that sends an ACK frame back to this node, which runs the user's callback.
``sio.call`` is built on that and so works across workers.

Requests (:meth:`fetch_sockets`, :meth:`server_side_emit_with_ack`) go to
every *live* peer (:class:`~.peers.PeerTable`, fed by heartbeats and transport
events) and complete when each has answered or died; after
``request_timeout_s`` they raise :class:`~.exceptions.RequestTimeout` carrying
the partial results.

Ordering and duplicates: frames carry per-stream sequence numbers
(:mod:`.sequence`); receivers drop repeats and count gaps.

Emits from outside the cluster (:mod:`.external`) come from *sources*
attached with :meth:`attach_source` (python-socketio's pub/sub channel, the
AMQP emit queue) or from the master (``POST /emit``): :meth:`apply_external`
applies one to this worker's sockets only, or, with ``broadcast=True``,
through the adapter like an emit of the app.  ``emits`` counts them by
source; ``refused`` counts what was refused, by ``source/reason``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import itertools
import logging
import time
import urllib.parse
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, overload

from engineio import packet as eio_packet
from socketio import AsyncManager
from socketio import packet as sio_packet

from ..libcontract import server_hook, set_server_hook
from .delivery import looks_like_sid, plan_delivery, room_channel
from .envelope import Codec, Envelope, Header, MsgType, ParsedFrame, parse_header, serialize
from .exceptions import AdapterError, EncodingError, ProtocolError, RequestTimeout
from .external import ExternalClose, ExternalEmit, ExternalOp, ExternalRooms, Refused
from .peers import PeerTable
from .requests import RequestTable
from .sequence import BROADCAST, DIRECT, Deduplicator, Sequencer, Verdict
from .transport import AdapterState, Owner, Transport

if TYPE_CHECKING:
    from ..recovery.agent import RecoveryAgent

__all__ = ["ClusterManager", "ExternalSource", "ServerSideHandler", "SocketInfo"]

log = logging.getLogger("siocluster.adapter")

ServerSideHandler = Callable[..., Any]
_H = TypeVar("_H", bound=ServerSideHandler)
Room = str | int

# A forwarded ack whose client never answers is forgotten after this long.
ACK_TTL_S = 300.0


class ExternalSource(Protocol):
    """Where emits from outside the cluster come in (see :meth:`ClusterManager.attach_source`)."""

    name: str  # the ``source`` label: "redis-emitter", "amqp"

    async def start(self, manager: ClusterManager) -> None: ...

    def status(self) -> dict[str, Any]: ...

    async def close(self) -> None: ...


@dataclasses.dataclass(frozen=True, slots=True)
class SocketInfo:
    """One socket as :meth:`ClusterManager.fetch_sockets` reports it."""

    id: str
    namespace: str
    rooms: tuple[Room, ...]
    handshake: dict[str, Any]  # headers, query, address, auth, time
    node: str  # the worker that holds it


@dataclasses.dataclass(slots=True)
class _RemoteAck:
    callback: Callable[..., Any]
    node: str | None  # owner, when known: forgotten when it dies
    expires_at: float
    once: bool


def _as_rooms(value: Any) -> tuple[Room, ...]:
    if value is None:
        return ()
    if isinstance(value, str | int):
        return (value,)
    return tuple(v for v in value if v is not None)


def _anyone(sid: str) -> str | Owner:
    return Owner.ANY


def _as_args(data: Any) -> list[Any]:
    # python-socketio's rule: a tuple is several arguments, anything else one.
    if isinstance(data, tuple):
        return list(data)
    if data is None:
        return []
    return [data]


class ClusterManager(AsyncManager):  # type: ignore[misc]
    """python-socketio client manager spanning every worker.  See the module docstring."""

    name = "siocluster"

    def __init__(
        self,
        transport: Transport,
        *,
        # Timeouts
        request_timeout_s: float = 5.0,
        heartbeat_interval_s: float = 1.0,
        peer_timeout_s: float | None = None,
        codec: Codec = Codec.MSGPACK,
    ) -> None:
        super().__init__()
        self.transport = transport
        self.node = transport.node
        self.codec = codec
        self.request_timeout_s = request_timeout_s
        self.heartbeat_interval_s = heartbeat_interval_s
        timeout = peer_timeout_s or max(3 * heartbeat_interval_s, 0.5)
        self.peers = PeerTable(self.node, timeout_s=timeout)
        self.requests = RequestTable()
        self.sequencer = Sequencer()
        self.dedupe = Deduplicator()
        self._handlers: dict[str, ServerSideHandler] = {}
        self._remote_acks: dict[int, _RemoteAck] = {}
        self._ack_ids = itertools.count(1)
        self._auth: dict[tuple[str, str], Any] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._heartbeat: asyncio.Task[None] | None = None
        self._closed = False
        # Counters (heartbeats are counted apart from messages)
        self.sent = 0
        self.received = 0
        self.heartbeats_sent = 0
        self.heartbeats_received = 0
        self.undeliverable = 0
        self.skipped = 0  # frames dropped after the header: no matching rooms here
        self.errors = 0
        self.timeouts = 0
        self.handler_errors = 0
        self.emits: Counter[str] = Counter()  # by source: internal, http, redis-emitter ...
        self.refused: Counter[str] = Counter()  # external messages, by "source/reason"
        self.sources: list[ExternalSource] = []
        self.fanout_skipped = 0  # local recipients gone between selection and send
        # Connection-state recovery (worker.recovery): set by RecoveryAgent.install.
        self.recovery: RecoveryAgent | None = None

    # Lifecycle

    async def start(self) -> None:
        """Connect and subscribe; called by ``install_adapter`` before the worker is ready."""
        self._wrap_connect_handler()
        await self.transport.start(self)
        self._send(MsgType.HEARTBEAT, "/", None, sequenced=False, bufferable=False)
        self._heartbeat = asyncio.create_task(self._heartbeat_forever())

    def initialize(self) -> None:
        # python-socketio calls this at the first connection; we started earlier.
        pass

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for source in self.sources:
            try:
                await source.close()
            except Exception as exc:
                log.warning("closing the %s source failed: %r", source.name, exc)
        if self.transport.state == AdapterState.CONNECTED:
            self._send(MsgType.BYE, "/", None)
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.requests.cancel_all()
        await self.transport.close()

    def status(self) -> dict[str, Any]:
        transport = self.transport.status()
        dropped = (
            transport.get("transport_dropped", 0)
            + transport.get("overflowed", 0)
            + transport.get("expired", 0)
        )
        state = self.transport.state.name.lower()
        external = {s.name: s.status() for s in self.sources}
        if state == "connected" and any(e["state"] == "degraded" for e in external.values()):
            state = "degraded"  # a way in from outside is down: /health says so
        return {
            "backend": self.transport.name,
            "state": state,
            "node": self.node,
            "peers": sorted(self.peers.live()),
            "server_count": self.server_count(),
            "sent": self.sent,
            "received": self.received,
            "heartbeats_sent": self.heartbeats_sent,
            "heartbeats_received": self.heartbeats_received,
            "dropped": dropped,
            "undeliverable": self.undeliverable + transport.get("undeliverable_remote", 0),
            "duplicates": self.dedupe.duplicates,
            "lost": self.dedupe.lost,
            "skipped": self.skipped,
            "errors": self.errors + transport.get("transport_errors", 0),
            "handler_errors": self.handler_errors,
            "requests_pending": len(self.requests),
            "requests_timed_out": self.timeouts,
            "buffered_bytes": transport.get("buffered_bytes", 0),
            "transport": transport,
            "external": external,
            "emits": dict(self.emits),
            "external_refused": dict(self.refused),
        }

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _heartbeat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval_s)
            now = time.monotonic()
            self._send(MsgType.HEARTBEAT, "/", None, sequenced=False, bufferable=False)
            for node in self.peers.expire(now):
                log.warning("peer %s missed its heartbeats; forgetting it", node)
                self._forget_peer(node)
            for ack_id, ack in list(self._remote_acks.items()):
                if ack.expires_at < now:
                    del self._remote_acks[ack_id]

    # TransportEvents

    def peer_up(self, node: str) -> None:
        if self.peers.seen(node, time.monotonic()):
            log.debug("peer %s is up", node)

    def peer_down(self, node: str) -> None:
        if node in self.peers:
            log.info("peer %s is gone", node)
        self._forget_peer(node)

    def state_changed(self, state: AdapterState) -> None:
        if state == AdapterState.DEGRADED:
            self.peers.freeze()
        elif state == AdapterState.CONNECTED:
            self.peers.thaw(time.monotonic())

    def _forget_peer(self, node: str) -> None:
        self.peers.forget(node)
        self.dedupe.forget(node)
        self.requests.peer_gone(node)
        for ack_id, ack in list(self._remote_acks.items()):
            if ack.node == node:
                del self._remote_acks[ack_id]

    async def frame_received(self, frame: bytes) -> None:
        if self._closed:
            return
        try:
            parsed = parse_header(frame)
            header = parsed.header
            if header.node == self.node:
                return  # our own broadcast, echoed by the broker
            if header.to is not None and header.to != self.node:
                return
            verdict = self.dedupe.check(header.node, self._stream_of(header), header.seq)
            if verdict is Verdict.DUPLICATE:
                return
            if header.type == MsgType.HEARTBEAT:
                self.heartbeats_received += 1
            else:
                self.received += 1
            self.peers.seen(header.node, time.monotonic())
            await self._dispatch(parsed)
        except ProtocolError as exc:
            self.errors += 1
            log.warning("dropping a bad frame: %s", exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.errors += 1
            log.exception("error handling a cross-worker frame")

    async def _dispatch(self, parsed: ParsedFrame) -> None:
        header = parsed.header
        kind = parsed.type
        if kind in (MsgType.HEARTBEAT, MsgType.HELLO):
            return
        if kind == MsgType.BYE:
            self._forget_peer(header.node)
            return
        if kind == MsgType.ACK:
            await self._on_ack(parsed.data())
            return
        if kind in (MsgType.FETCH_RESP, MsgType.SSE_RESP):
            self.requests.reply(header.rid, header.node, parsed.data())
            return
        if kind == MsgType.SSE:
            self._spawn(self._on_server_side(parsed))
            return
        if kind == MsgType.FETCH_REQ:
            sockets = [
                self._describe(header.nsp, sid, eio_sid)
                for sid, eio_sid in self._select(header.nsp, header.rooms, header.exclude)
            ]
            self._send(MsgType.FETCH_RESP, header.nsp, sockets, to=header.node, rid=header.rid)
            return
        # Selector-addressed operations: skip the body unless we hold a target.
        if not self._holds_any(header.nsp, header.rooms):
            self.skipped += 1
            if header.to is not None:
                self.undeliverable += 1
            return
        if kind == MsgType.BROADCAST:
            event, args, ack_id = parsed.data()
            callback = None
            if ack_id:
                callback = functools.partial(self._return_ack, header.node, ack_id)
            await self._deliver(event, args, header.nsp, header.rooms, header.exclude, callback)
        elif kind == MsgType.JOIN:
            await self._join_local(parsed.data(), header.nsp, header.rooms, header.exclude)
        elif kind == MsgType.LEAVE:
            await self._leave_local(parsed.data(), header.nsp, header.rooms, header.exclude)
        elif kind == MsgType.DISCONNECT:
            close = bool(parsed.data())
            self._spawn(self._disconnect_local(header.nsp, header.rooms, header.exclude, close))

    def _holds_any(self, nsp: str, rooms: tuple[Room, ...]) -> bool:
        ns = self.rooms.get(nsp)
        if not ns:
            return False
        return not rooms or any(room in ns for room in rooms)

    # Sending

    def _send(
        self,
        kind: MsgType,
        nsp: str,
        data: Any,
        *,
        to: str | None = None,
        rooms: tuple[Room, ...] = (),
        exclude: tuple[Room, ...] = (),
        rid: int = 0,
        sequenced: bool = True,
        bufferable: bool = True,
    ) -> None:
        room_key = self._room_key(kind, nsp, to, rooms)
        seq = self.sequencer.next(room_key or to) if sequenced else 0
        envelope = Envelope(
            kind, self.node, nsp, data, seq=seq, to=to, rooms=rooms, exclude=exclude, rid=rid
        )
        frame = serialize(envelope, self.codec)
        if room_key is not None:
            self.transport.send_room(frame, room_key)
        else:
            self.transport.send(frame, to, bufferable=bufferable)
        if kind == MsgType.HEARTBEAT:
            self.heartbeats_sent += 1
        else:
            self.sent += 1

    def _room_key(self, kind: int, nsp: str, to: str | None,
                  rooms: tuple[Room, ...]) -> str | None:
        """The room channel a frame travels on, if any; the same rule on both ends."""
        if not self.transport.dynamic_rooms or kind != MsgType.BROADCAST or to is not None:
            return None
        return room_channel(nsp, rooms)

    def _stream_of(self, header: Header) -> str:
        if header.to is not None:
            return DIRECT
        return self._room_key(header.type, header.nsp, None, header.rooms) or BROADCAST

    # Dynamic room channels: hold a room, listen to it

    def basic_enter_room(
        self, sid: str, namespace: str, room: Room | None, eio_sid: str | None = None
    ) -> None:
        new = room is not None and room != sid and room not in self.rooms.get(namespace, {})
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        if self.recovery is not None and room is not None and room != sid:
            self.recovery.rooms_changed(namespace, sid)  # written through to the store
        if new and self.transport.dynamic_rooms:
            key = room_channel(namespace, (room,))  # type: ignore[arg-type]
            if key is not None:
                self.transport.interest(key, True)

    def basic_leave_room(self, sid: str, namespace: str, room: Room | None) -> None:
        held = room is not None and room != sid and room in self.rooms.get(namespace, {})
        super().basic_leave_room(sid, namespace, room)
        if self.recovery is not None and room is not None and room != sid:
            self.recovery.rooms_changed(namespace, sid)
        if held and self.transport.dynamic_rooms and room not in self.rooms.get(namespace, {}):
            key = room_channel(namespace, (room,))  # type: ignore[arg-type]
            if key is not None:
                self.transport.interest(key, False)
                self.dedupe.forget_stream(key)

    def _plan(
        self, nsp: str, targets: tuple[Room, ...]
    ) -> list[tuple[str | None, tuple[Room, ...]]]:
        """Where a selector must go besides this worker (see :mod:`.delivery`)."""
        # With recovery a sid may live on another worker than the one that
        # minted it (it was recovered there): address sids like rooms.
        owner_of = _anyone if self.recovery is not None else self.transport.owner_of
        deliveries, gone = plan_delivery(
            targets, self.rooms.get(nsp, {}).get(None, {}), owner_of
        )
        self.undeliverable += gone
        return [(d.node, d.rooms) for d in deliveries]

    def _send_selected(
        self, kind: MsgType, nsp: str, data: Any,
        targets: tuple[Room, ...], exclude: tuple[Room, ...],
    ) -> None:
        for node, rooms in self._plan(nsp, targets):
            self._send(kind, nsp, data, to=node, rooms=rooms, exclude=exclude)

    # Local application of selectors

    def _select(
        self, nsp: str, targets: Iterable[Room], exclude: Iterable[Room], *, connected: bool = True
    ) -> list[tuple[str, str]]:
        """This worker's (sid, eio_sid) in any of ``targets`` and none of ``exclude``."""
        ns = self.rooms.get(nsp)
        if not ns:
            return []
        wanted: list[Room | None] = list(targets) or [None]
        pool: dict[str, str] = {}
        for room in wanted:
            if room in ns:
                pool.update(ns[room].items())
        for room in exclude:
            if room in ns:
                for sid in ns[room]:
                    pool.pop(sid, None)
        if connected:
            return [(s, e) for s, e in pool.items() if self.is_connected(s, nsp)]
        return list(pool.items())

    async def _deliver(
        self, event: str, args: list[Any], nsp: str,
        targets: tuple[Room, ...], exclude: tuple[Room, ...],
        callback: Callable[..., Any] | None,
    ) -> int:
        if nsp not in self.rooms:
            return 0
        if not exclude and len(targets) <= 1:
            room = targets[0] if targets else None
            if room is not None and room not in self.rooms[nsp]:
                return 0
            if callback is not None:
                await super().emit(event, tuple(args), nsp, room=room, callback=callback)
            else:
                await self._fan_out(event, args, nsp, self.get_participants(nsp, room))
            return 1
        selected = self._select(nsp, targets, exclude, connected=False)
        if selected and callback is not None:
            await super().emit(event, tuple(args), nsp, room=[sid for sid, _ in selected],
                               callback=callback)
        elif selected:
            await self._fan_out(event, args, nsp, selected)
        return len(selected)

    async def _fan_out(self, event: str, args: list[Any], nsp: str,
                       recipients: Iterable[tuple[str, str]]) -> None:
        """One event to many local sockets: encoded once, queued to each in turn.

        python-socketio's ``emit`` encodes once too, but then starts one task
        per recipient and waits for them all.  Queueing a packet on a socket
        (python-engineio's public ``send_packet``: a ping check and a put on
        the socket's queue) does not block, so a plain loop does the same work
        without a task per recipient; each socket's writer task still sends it,
        in order.  A recipient that is gone is skipped, as python-socketio's
        tasks would fail alone.
        """
        pkt = self.server.packet_class(sio_packet.EVENT, namespace=nsp, data=[event, *args])
        encoded = pkt.encode()
        parts = encoded if isinstance(encoded, list) else [encoded]
        eio_pkts = [eio_packet.Packet(eio_packet.MESSAGE, part) for part in parts]
        send = self.server.eio.send_packet
        for _sid, eio_sid in list(recipients):
            for eio_pkt in eio_pkts:
                try:
                    await send(eio_sid, eio_pkt)
                except Exception:  # closed between selection and send
                    self.fanout_skipped += 1
                    break

    async def _join_local(
        self, rooms: list[Room], nsp: str, targets: Iterable[Room], exclude: Iterable[Room]
    ) -> None:
        for sid, _ in self._select(nsp, targets, exclude, connected=False):
            for room in rooms:
                await super().enter_room(sid, nsp, room)

    async def _leave_local(
        self, rooms: list[Room], nsp: str, targets: Iterable[Room], exclude: Iterable[Room]
    ) -> None:
        for sid, _ in self._select(nsp, targets, exclude, connected=False):
            for room in rooms:
                await super().leave_room(sid, nsp, room)

    async def _disconnect_local(
        self, nsp: str, targets: Iterable[Room], exclude: Iterable[Room], close: bool
    ) -> None:
        for sid, eio_sid in self._select(nsp, targets, exclude):
            if close:
                await self.server.eio.disconnect(eio_sid)
            else:
                await self.server.disconnect(sid, namespace=nsp, ignore_queue=True)

    # python-socketio hooks

    async def emit(
        self, event: str, data: Any, namespace: str | None = None, room: Any = None,
        skip_sid: Any = None, callback: Callable[..., Any] | None = None, to: Any = None,
        **kwargs: Any,
    ) -> None:
        """Emit to a sid, a room, a list of rooms or everyone, on every worker.

        ``skip_sid`` may name rooms as well as sids: they are except-rooms.
        """
        nsp = namespace or "/"
        room = to or room
        if kwargs.get("ignore_queue"):
            await super().emit(event, data, nsp, room=room, skip_sid=skip_sid, callback=callback)
            return
        await self.broadcast(event, data, room=room, namespace=nsp, except_rooms=skip_sid,
                             callback=callback)

    async def can_disconnect(self, sid: str, namespace: str | None) -> bool:
        nsp = namespace or "/"
        if self.is_connected(sid, nsp) or self.is_pre_connected(sid, nsp):
            return bool(self.is_connected(sid, nsp))
        self._send_selected(MsgType.DISCONNECT, nsp, False, (sid,), ())
        return False

    async def enter_room(
        self, sid: str, namespace: str, room: Room, eio_sid: str | None = None
    ) -> None:
        nsp = namespace or "/"
        if eio_sid is not None or self.is_connected(sid, nsp) or self.is_pre_connected(sid, nsp):
            await super().enter_room(sid, nsp, room, eio_sid=eio_sid)
            return
        self._send_selected(MsgType.JOIN, nsp, [room], (sid,), ())

    async def leave_room(self, sid: str, namespace: str, room: Room) -> None:
        nsp = namespace or "/"
        if self.is_connected(sid, nsp) or self.is_pre_connected(sid, nsp):
            await super().leave_room(sid, nsp, room)
            return
        self._send_selected(MsgType.LEAVE, nsp, [room], (sid,), ())

    async def close_room(self, room: Room, namespace: str | None = None) -> None:
        nsp = namespace or "/"
        await super().close_room(room, nsp)
        self._send(MsgType.LEAVE, nsp, [room], rooms=(room,))

    def basic_disconnect(self, sid: str, namespace: str, **kwargs: Any) -> None:
        eio_sid = self.eio_sid_from_sid(sid, namespace)
        super().basic_disconnect(sid, namespace, **kwargs)
        if eio_sid is not None:
            self._auth.pop((namespace, eio_sid), None)
        if self.recovery is not None:
            self.recovery.gone(sid, namespace)

    # Connection-state recovery hooks (see worker.recovery.agent)

    async def pre_connect(self, eio_sid: str, namespace: str) -> str | None:
        recovery = self.recovery
        if recovery is None:
            sid: str | None = await super().pre_connect(eio_sid, namespace)
            return sid
        sid = recovery.restored_sid(eio_sid, namespace)
        if sid is not None and self.is_sid_room(namespace, sid):
            recovery.still_here(namespace, sid)  # its old socket is still on this worker
            sid = None
        if sid is None:
            sid = await super().pre_connect(eio_sid, namespace)
            if sid is not None:
                recovery.fresh_sid(namespace, sid, eio_sid)
            return sid
        # python-socketio's pre_connect, with the recovered sid instead of a new one.
        self.basic_enter_room(sid, namespace, None, eio_sid=eio_sid)
        self.basic_enter_room(sid, namespace, sid, eio_sid=eio_sid)
        self.pending_connect.setdefault(namespace, []).append(sid)
        return sid

    async def connect(self, sid: str, namespace: str) -> Any:
        result = await super().connect(sid, namespace)
        if self.recovery is not None:
            await self.recovery.connected(result, namespace)
        return result

    async def deliver_logged(
        self, event: str, args: list[Any], nsp: str,
        targets: tuple[Room, ...], exclude: tuple[Room, ...],
    ) -> None:
        """A sequenced emit from the master, offset appended: to this worker's sockets."""
        await self._deliver(event, args, nsp, targets, exclude, None)

    async def deliver_to_sid(self, sid: str, nsp: str, event: str, args: list[Any]) -> None:
        await super().emit(event, tuple(args), nsp, room=sid)

    # Acks across workers

    def _register_ack(self, callback: Callable[..., Any], node: str | None, once: bool) -> int:
        ack_id = next(self._ack_ids)
        self._remote_acks[ack_id] = _RemoteAck(
            callback, node, time.monotonic() + ACK_TTL_S, once
        )
        return ack_id

    async def _return_ack(self, origin: str, ack_id: int, *args: Any) -> None:
        self._send(MsgType.ACK, "/", [ack_id, list(args)], to=origin)

    async def _on_ack(self, data: Any) -> None:
        try:
            ack_id, args = data
        except (TypeError, ValueError):
            raise ProtocolError("ACK data is not [id, args]") from None
        ack = self._remote_acks.get(ack_id)
        if ack is None:
            return
        if ack.once:
            del self._remote_acks[ack_id]
        result = ack.callback(*args)
        if inspect.isawaitable(result):
            await result

    # Public cluster API (Node socket.io adapter parity)

    def server_count(self) -> int:
        """How many workers (this one included) are alive, as far as this worker knows."""
        return 1 + len(self.peers)

    async def broadcast(
        self, event: str, data: Any = None, room: Any = None, namespace: str = "/",
        *, except_rooms: Any = None, callback: Callable[..., Any] | None = None,
    ) -> None:
        """Emit ``event`` to ``room`` minus ``except_rooms``, on every worker.

        ``room`` is a room, a sid, a list of them, or None for the whole namespace.

        The sockets on this worker get it directly; the rest through the
        transport.  ``callback`` is called once per client ack.
        """
        self.emits["internal"] += 1
        await self._broadcast(event, _as_args(data), room, namespace, except_rooms, callback)

    async def _broadcast(
        self, event: str, args: list[Any], room: Any, namespace: str,
        except_rooms: Any, callback: Callable[..., Any] | None,
    ) -> None:
        targets = _as_rooms(room)
        exclude = _as_rooms(except_rooms)
        if self.recovery is not None and callback is None:
            # Recoverable: the master numbers it and sends it to every worker, us too.
            try:
                self.recovery.append(event, args, namespace, targets, exclude)
            except (TypeError, ValueError) as exc:
                raise EncodingError(f"cannot encode the emit of {event!r}: {exc}") from None
            return
        await self._deliver(event, args, namespace, targets, exclude, callback)
        plan = self._plan(namespace, targets)
        for node, rooms in plan:
            ack_id = 0
            if callback is not None:
                single = len(targets) == 1 and looks_like_sid(targets[0])
                ack_id = self._register_ack(callback, node, once=single)
            try:
                self._send(MsgType.BROADCAST, namespace, [event, args, ack_id],
                           to=node, rooms=rooms, exclude=exclude)
            except EncodingError:
                self._remote_acks.pop(ack_id, None)
                raise

    async def sockets_join(
        self, rooms: Any, room: Any = None, namespace: str = "/", *, except_rooms: Any = None
    ) -> None:
        """Make every socket in ``room`` (None: all) but not in ``except_rooms`` join ``rooms``."""
        joining = list(_as_rooms(rooms))
        targets, exclude = _as_rooms(room), _as_rooms(except_rooms)
        await self._join_local(joining, namespace, targets, exclude)
        self._send_selected(MsgType.JOIN, namespace, joining, targets, exclude)

    async def sockets_leave(
        self, rooms: Any, room: Any = None, namespace: str = "/", *, except_rooms: Any = None
    ) -> None:
        """Make the selected sockets leave ``rooms``; the selector is as in :meth:`sockets_join`."""
        leaving = list(_as_rooms(rooms))
        targets, exclude = _as_rooms(room), _as_rooms(except_rooms)
        await self._leave_local(leaving, namespace, targets, exclude)
        self._send_selected(MsgType.LEAVE, namespace, leaving, targets, exclude)

    async def disconnect_sockets(
        self, room: Any = None, namespace: str = "/", *, except_rooms: Any = None,
        close: bool = False,
    ) -> None:
        """Disconnect the selected sockets from ``namespace``; ``close`` drops their
        whole Engine.IO connection (every namespace), like Node's ``disconnect(true)``."""
        targets, exclude = _as_rooms(room), _as_rooms(except_rooms)
        self._send_selected(MsgType.DISCONNECT, namespace, close, targets, exclude)
        await self._disconnect_local(namespace, targets, exclude, close)

    async def fetch_sockets(
        self, room: Any = None, namespace: str = "/", *, except_rooms: Any = None,
        timeout: float | None = None,
    ) -> list[SocketInfo]:
        """Every socket in ``room`` (None: all) but not in ``except_rooms``, on every worker.

        Raises :class:`RequestTimeout` (with ``results`` holding what arrived)
        when a live worker does not answer within ``timeout`` (default
        ``request_timeout_s``).
        """
        targets, exclude = _as_rooms(room), _as_rooms(except_rooms)
        found = [
            self._info(self._describe(namespace, sid, eio_sid), namespace, self.node)
            for sid, eio_sid in self._select(namespace, targets, exclude)
        ]
        if targets and not self._plan(namespace, targets):
            return found  # every target is a sid on this worker
        replies = await self._request(
            MsgType.FETCH_REQ, namespace, None, targets, exclude, timeout,
            lambda partial: found + self._flatten_sockets(partial, namespace),
            "fetch_sockets",
        )
        return found + self._flatten_sockets(replies, namespace)

    @overload
    def on_server_side(self, event: str) -> Callable[[_H], _H]: ...

    @overload
    def on_server_side(self, event: str, handler: _H) -> _H: ...

    def on_server_side(self, event: str, handler: _H | None = None) -> Any:
        """Register ``handler(*args)`` for :meth:`server_side_emit` from other workers.

        Usable as ``@sio.manager.on_server_side("event")`` or
        ``sio.manager.on_server_side("event", handler)``.  The handler may be
        a coroutine function; its return value is the ack.
        """
        if handler is not None:
            self._handlers[event] = handler
            return handler

        def decorator(func: _H) -> _H:
            self._handlers[event] = func
            return func

        return decorator

    async def server_side_emit(self, event: str, *args: Any, namespace: str = "/") -> None:
        """Send ``event`` to the other workers' server-side handlers; no acks."""
        self._send(MsgType.SSE, namespace, [event, list(args)])

    async def server_side_emit_with_ack(
        self, event: str, *args: Any, namespace: str = "/", timeout: float | None = None
    ) -> list[Any]:
        """Send ``event`` to the other workers and collect each handler's return value.

        Workers without a handler for ``event`` answer without a value and are
        left out of the list.  Raises :class:`RequestTimeout` with the partial
        list after ``timeout`` (default ``request_timeout_s``).
        """
        replies = await self._request(
            MsgType.SSE, namespace, [event, list(args)], (), (), timeout,
            self._flatten_acks, "server_side_emit_with_ack",
        )
        return self._flatten_acks(replies)

    # Requests

    async def _request(
        self, kind: MsgType, nsp: str, data: Any, targets: tuple[Room, ...],
        exclude: tuple[Room, ...], timeout: float | None,
        partial_result: Callable[[dict[str, Any]], Any], what: str,
    ) -> dict[str, Any]:
        rid, pending = self.requests.open(self.peers.live())
        try:
            self._send(kind, nsp, data, rooms=targets, exclude=exclude, rid=rid)
        except AdapterError:
            self.requests.abandon(rid)
            raise
        wait = self.request_timeout_s if timeout is None else timeout
        try:
            return await asyncio.wait_for(asyncio.shield(pending.future), wait)
        except TimeoutError:
            self.timeouts += 1
            left = self.requests.abandon(rid) or pending
            missing = frozenset(left.expected)
            raise RequestTimeout(
                f"{what} timed out after {wait:g}s waiting for {len(missing)} of "
                f"{len(missing) + len(left.replies)} workers: {', '.join(sorted(missing))}",
                results=partial_result(left.replies),
                missing=missing,
            ) from None
        finally:
            if not pending.future.done():
                self.requests.abandon(rid)

    @staticmethod
    def _info(raw: Any, nsp: str, node: str) -> SocketInfo:
        return SocketInfo(
            id=raw["id"], namespace=nsp, rooms=tuple(raw["rooms"]),
            handshake=raw["handshake"], node=node,
        )

    def _flatten_sockets(self, replies: dict[str, Any], nsp: str) -> list[SocketInfo]:
        out = []
        for node, sockets in replies.items():
            for raw in sockets or []:
                try:
                    out.append(self._info(raw, nsp, node))
                except (KeyError, TypeError):
                    self.errors += 1
        return out

    @staticmethod
    def _flatten_acks(replies: dict[str, Any]) -> list[Any]:
        return [value for handled, value in replies.values() if handled]

    async def _on_server_side(self, parsed: ParsedFrame) -> None:
        header = parsed.header
        event, args = parsed.data()
        handler = self._handlers.get(event)
        handled, value = False, None
        if handler is not None:
            try:
                value = handler(*args)
                if inspect.isawaitable(value):
                    value = await value
                handled = True
            except Exception:
                self.handler_errors += 1
                log.exception("server-side handler for %r failed", event)
        if header.rid:
            try:
                self._send(MsgType.SSE_RESP, header.nsp, [handled, value],
                           to=header.node, rid=header.rid)
            except EncodingError as exc:
                self.handler_errors += 1
                log.warning("server-side handler for %r returned %s", event, exc)
                self._send(MsgType.SSE_RESP, header.nsp, [False, None],
                           to=header.node, rid=header.rid)

    # Messages from outside the cluster

    async def attach_source(self, source: ExternalSource) -> None:
        """Start ``source``; it is closed with the manager and shown in :meth:`status`."""
        self.sources.append(source)
        await source.start(self)

    def refuse(self, source: str, refused: Refused) -> None:
        """Count a message that was refused; logged at warning level once per reason."""
        key = f"{source}/{refused.reason}"
        if not self.refused[key]:
            log.warning("refusing a %s message (%s): %s; counted in "
                        "siocluster_external_refused", source, refused.reason, refused.detail)
        self.refused[key] += 1

    async def apply_external(
        self, op: ExternalOp, *, source: str, broadcast: bool = False
    ) -> None:
        """Apply an op from outside the cluster.

        ``broadcast=False``: to this worker's sockets only (every worker sees
        the message).  ``broadcast=True``: this worker is the only one to see
        it, so it goes through the adapter like the app's own calls.
        """
        if isinstance(op, ExternalEmit):
            self.emits[source] += 1
            if broadcast:
                await self._broadcast(op.event, list(op.args), op.rooms or None, op.namespace,
                                      op.exclude, None)
            else:
                await self._deliver(op.event, list(op.args), op.namespace, op.rooms,
                                    op.exclude, None)
        elif isinstance(op, ExternalClose):
            if broadcast:
                await self.close_room(op.room, op.namespace)
            else:
                await super().close_room(op.room, op.namespace)
        elif isinstance(op, ExternalRooms):
            nsp = op.namespace
            here = self.is_connected(op.sid, nsp) or self.is_pre_connected(op.sid, nsp)
            if not here and not broadcast:
                return
            if op.method == "disconnect":
                await self.server.disconnect(op.sid, namespace=nsp, ignore_queue=here)
            elif op.method == "enter_room" and op.room is not None:
                await self.enter_room(op.sid, nsp, op.room)
            elif op.method == "leave_room" and op.room is not None:
                await self.leave_room(op.sid, nsp, op.room)

    # Handshake data for fetch_sockets

    def _wrap_connect_handler(self) -> None:
        """Remember each namespace connection's auth payload.

        python-socketio hands ``auth`` only to the connect handler, so this
        wraps the server's ``_handle_connect`` on this instance (a private hook,
        listed in :mod:`worker.libcontract`; without it ``auth`` is reported as None).
        """
        server = self.server
        original = server_hook(server, "_handle_connect")
        if getattr(original, "_siocluster", False):
            return

        async def handle_connect(eio_sid: str, namespace: str | None, data: Any) -> Any:
            key = (namespace or "/", eio_sid)
            self._auth[key] = data
            try:
                return await original(eio_sid, namespace, data)
            finally:
                if self.sid_from_eio_sid(eio_sid, key[0]) is None:
                    self._auth.pop(key, None)

        handle_connect._siocluster = True  # type: ignore[attr-defined]
        set_server_hook(server, "_handle_connect", handle_connect)

    def _describe(self, nsp: str, sid: str, eio_sid: str) -> dict[str, Any]:
        environ: dict[str, Any] = getattr(self.server, "environ", {}).get(eio_sid, {})
        headers = {
            key[5:].replace("_", "-").lower(): value
            for key, value in environ.items()
            if key.startswith("HTTP_") and isinstance(value, str)
        }
        query = dict(urllib.parse.parse_qsl(environ.get("QUERY_STRING", "")))
        return {
            "id": sid,
            "rooms": self.get_rooms(sid, nsp),
            "handshake": {
                "headers": headers,
                "query": query,
                "address": environ.get("REMOTE_ADDR"),
                "secure": environ.get("wsgi.url_scheme") == "https",
                "auth": self._auth.get((nsp, eio_sid)),
            },
        }
