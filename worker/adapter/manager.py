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
directly (:class:`~.fanout.LocalSockets`, the base class), then goes to the
peers that may hold the rest, as the pure delivery plan says
(:func:`~.delivery.plan_delivery`):

* targets that are sids of this worker: nothing leaves the process;
* sids whose owner the transport can name (``local``: the sid prefix is the
  owner's node id): one directed frame per owner; a sid whose owner is gone
  is counted as undeliverable;
* anything else (room names, the whole namespace, ``redis`` sids): one
  broadcast whose header lists the rooms, so receivers that hold none of them
  drop it after decoding the header only.

It is composed of parts, each in its own module: :class:`~.wire.Wire`
(frames out and in, per-stream sequence numbers, repeats dropped),
:class:`~.link.ClusterLink` (heartbeats, peer events, incoming frames),
:class:`~.calls.ClusterCalls` (acks across workers, so ``sio.call`` works;
requests to every live peer, :meth:`fetch_sockets` and
:meth:`server_side_emit_with_ack`, which raise
:class:`~.exceptions.RequestTimeout` after ``request_timeout_s``) and
:class:`~.intake.ExternalIntake` (emits from outside the cluster,
:meth:`attach_source` and :meth:`apply_external`, counted by source).  What
stays here is python-socketio's manager surface, the public cluster API
(Node socket.io adapter parity) and the lifecycle.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

from ..control import AdapterStatus
from .calls import ClusterCalls, ServerSideHandler, SocketInfo
from .delivery import Room, anyone, as_args, as_rooms, looks_like_sid, plan_delivery, room_channel
from .envelope import Codec, MsgType
from .exceptions import EncodingError
from .external import ExternalOp, Refused
from .fanout import LocalSockets
from .intake import ExternalIntake, ExternalSource
from .link import ClusterLink
from .peers import PeerTable
from .report import adapter_status
from .transport import AdapterState, Transport
from .wire import Wire

if TYPE_CHECKING:
    from ..recovery.agent import RecoveryAgent

__all__ = ["ClusterManager", "ExternalSource", "ServerSideHandler", "SocketInfo"]

log = logging.getLogger("siocluster.adapter")

_H = TypeVar("_H", bound=ServerSideHandler)


class ClusterManager(LocalSockets):
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
        self.wire = Wire(transport, codec)
        self.calls = ClusterCalls(self)
        self.intake = ExternalIntake(self)
        self.link = ClusterLink(self)
        self._closed = False
        self.undeliverable = 0  # targets whose owner is gone (the parts count the rest)
        # Connection-state recovery (worker.recovery): set by RecoveryAgent.install.
        self.recovery: RecoveryAgent | None = None

    # Lifecycle

    async def start(self) -> None:
        """Connect and subscribe; called by ``install_adapter`` before the worker is ready."""
        self.calls.wrap_connect_handler()
        await self.transport.start(self.link)
        self.wire.send(MsgType.HEARTBEAT, "/", None, sequenced=False, bufferable=False)
        self.link.start()

    def initialize(self) -> None:
        # python-socketio calls this at the first connection; we started earlier.
        pass

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.intake.close_sources()
        if self.transport.state == AdapterState.CONNECTED:
            self.wire.send(MsgType.BYE, "/", None)
        await self.link.stop()
        self.calls.requests.cancel_all()
        await self.transport.close()

    def status(self) -> AdapterStatus:
        """Backend, state and figures, for the heartbeat (see :mod:`.report`)."""
        return adapter_status(self)

    # Sending

    def _plan(
        self, nsp: str, targets: tuple[Room, ...]
    ) -> list[tuple[str | None, tuple[Room, ...]]]:
        """Where a selector must go besides this worker (see :mod:`.delivery`)."""
        # With recovery a sid may live on another worker than the one that
        # minted it (it was recovered there): address sids like rooms.
        owner_of = anyone if self.recovery is not None else self.transport.owner_of
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
            self.wire.send(kind, nsp, data, to=node, rooms=rooms, exclude=exclude)

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
                self.wire.dedupe.forget_stream(key)

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
        self.intake.emits["internal"] += 1
        await self._broadcast(event, as_args(data), room, namespace, except_rooms, callback)

    async def _broadcast(
        self, event: str, args: list[Any], room: Any, namespace: str,
        except_rooms: Any, callback: Callable[..., Any] | None,
    ) -> None:
        targets = as_rooms(room)
        exclude = as_rooms(except_rooms)
        if self.recovery is not None and callback is None:
            # Recoverable: the master numbers it and sends it to every worker, us too.
            try:
                self.recovery.append(event, args, namespace, targets, exclude)
            except (TypeError, ValueError) as exc:
                raise EncodingError(f"cannot encode the emit of {event!r}: {exc}") from None
            if self.recovery.flow is not None:
                await self.recovery.flow()  # the channel to the master has room again
            return
        await self._deliver(event, args, namespace, targets, exclude, callback)
        plan = self._plan(namespace, targets)
        for node, rooms in plan:
            ack_id = 0
            if callback is not None:
                single = len(targets) == 1 and looks_like_sid(targets[0])
                ack_id = self.calls.register_ack(callback, node, once=single)
            try:
                self.wire.send(MsgType.BROADCAST, namespace, [event, args, ack_id],
                               to=node, rooms=rooms, exclude=exclude)
            except EncodingError:
                self.calls.drop_ack(ack_id)
                raise

    async def sockets_join(
        self, rooms: Any, room: Any = None, namespace: str = "/", *, except_rooms: Any = None
    ) -> None:
        """Make every socket in ``room`` (None: all) but not in ``except_rooms`` join ``rooms``."""
        joining = list(as_rooms(rooms))
        targets, exclude = as_rooms(room), as_rooms(except_rooms)
        await self._join_local(joining, namespace, targets, exclude)
        self._send_selected(MsgType.JOIN, namespace, joining, targets, exclude)

    async def sockets_leave(
        self, rooms: Any, room: Any = None, namespace: str = "/", *, except_rooms: Any = None
    ) -> None:
        """Make the selected sockets leave ``rooms``; the selector is as in :meth:`sockets_join`."""
        leaving = list(as_rooms(rooms))
        targets, exclude = as_rooms(room), as_rooms(except_rooms)
        await self._leave_local(leaving, namespace, targets, exclude)
        self._send_selected(MsgType.LEAVE, namespace, leaving, targets, exclude)

    async def disconnect_sockets(
        self, room: Any = None, namespace: str = "/", *, except_rooms: Any = None,
        close: bool = False,
    ) -> None:
        """Disconnect the selected sockets from ``namespace``; ``close`` drops their
        whole Engine.IO connection (every namespace), like Node's ``disconnect(true)``."""
        targets, exclude = as_rooms(room), as_rooms(except_rooms)
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
        targets, exclude = as_rooms(room), as_rooms(except_rooms)
        return await self.calls.fetch_sockets(targets, exclude, namespace, timeout)

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
        return self.calls.on_server_side(event, handler)

    async def server_side_emit(self, event: str, *args: Any, namespace: str = "/") -> None:
        """Send ``event`` to the other workers' server-side handlers; no acks."""
        self.wire.send(MsgType.SSE, namespace, [event, list(args)])

    async def server_side_emit_with_ack(
        self, event: str, *args: Any, namespace: str = "/", timeout: float | None = None
    ) -> list[Any]:
        """Send ``event`` to the other workers and collect each handler's return value.

        Workers without a handler for ``event`` answer without a value and are
        left out of the list.  Raises :class:`RequestTimeout` with the partial
        list after ``timeout`` (default ``request_timeout_s``).
        """
        return await self.calls.server_side_emit_with_ack(event, args, namespace, timeout)

    # Messages from outside the cluster (see :mod:`.intake`)

    async def attach_source(self, source: ExternalSource) -> None:
        """Start ``source``; it is closed with the manager and shown in :meth:`status`."""
        await self.intake.attach_source(source)

    def refuse(self, source: str, refused: Refused) -> None:
        """Count a message that was refused; logged at warning level once per reason."""
        self.intake.refuse(source, refused)

    async def apply_external(
        self, op: ExternalOp, *, source: str, broadcast: bool = False
    ) -> None:
        """Apply an op from outside the cluster.

        ``broadcast=False``: to this worker's sockets only (every worker sees
        the message).  ``broadcast=True``: this worker is the only one to see
        it, so it goes through the adapter like the app's own calls.
        """
        await self.intake.apply(op, source=source, broadcast=broadcast)

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
        self.wire.send(MsgType.LEAVE, nsp, [room], rooms=(room,))

    def basic_disconnect(self, sid: str, namespace: str, **kwargs: Any) -> None:
        eio_sid = self.eio_sid_from_sid(sid, namespace)
        super().basic_disconnect(sid, namespace, **kwargs)
        if eio_sid is not None:
            self.calls.forget_auth(namespace, eio_sid)
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
