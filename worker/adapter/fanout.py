"""Applying a selector to this worker's own sockets: the local half of every operation.

:class:`LocalSockets` is python-socketio's ``AsyncManager`` plus the methods
that act on the sockets this worker holds, given a selector (target rooms
minus except-rooms, see :func:`~.delivery.select`): deliver an event
(:meth:`LocalSockets._deliver`, which hands many recipients to
:meth:`LocalSockets._fan_out`), join, leave, disconnect.  The
:class:`~.manager.ClusterManager` subclasses it and adds the other workers;
nothing here sends a frame.

Every ``super()`` call here reaches python-socketio's ``AsyncManager``, whose
methods act on this worker's sockets only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from engineio import packet as eio_packet
from socketio import AsyncManager
from socketio import packet as sio_packet

from .delivery import Room, select

__all__ = ["LocalSockets"]


class LocalSockets(AsyncManager):  # type: ignore[misc]
    """python-socketio's manager with selector-addressed operations on local sockets."""

    def __init__(self) -> None:
        super().__init__()
        self.fanout_skipped = 0  # local recipients gone between selection and send

    def _select(
        self, nsp: str, targets: Iterable[Room], exclude: Iterable[Room], *, connected: bool = True
    ) -> list[tuple[str, str]]:
        """This worker's (sid, eio_sid) in any of ``targets`` and none of ``exclude``."""
        pool = select(self.rooms.get(nsp), targets, exclude)
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

    async def close_room_here(self, room: Room, nsp: str) -> None:
        """Close ``room`` on this worker only."""
        await super().close_room(room, nsp)

    # For connection-state recovery (worker.recovery.agent)

    async def deliver_logged(
        self, event: str, args: list[Any], nsp: str,
        targets: tuple[Room, ...], exclude: tuple[Room, ...],
    ) -> None:
        """A sequenced emit from the master, offset appended: to this worker's sockets."""
        await self._deliver(event, args, nsp, targets, exclude, None)

    async def deliver_to_sid(self, sid: str, nsp: str, event: str, args: list[Any]) -> None:
        await super().emit(event, tuple(args), nsp, room=sid)
