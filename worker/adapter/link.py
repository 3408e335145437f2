"""This worker's link to its peers: heartbeats, peer events and incoming frames.

:class:`ClusterLink` is what the :class:`~.transport.Transport` reports to
(:class:`~.transport.TransportEvents`).  It keeps the peer table fresh: every
frame and heartbeat marks its sender alive, a peer that misses its heartbeats
or says BYE is forgotten (with its pending requests, acks and sequence
streams), and while the transport is degraded nobody is expired.

Incoming frames pass the :class:`~.wire.Wire` (drop our own, others', repeats)
and are dispatched by type: acks and replies to
:class:`~.calls.ClusterCalls`; selector-addressed operations (emit, join,
leave, disconnect) to the manager's local half
(:class:`~.fanout.LocalSockets`), but only when this worker holds one of the
target rooms, so the body of a frame meant for others is never decoded.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from .delivery import holds_any
from .envelope import MsgType, ParsedFrame
from .exceptions import ProtocolError
from .transport import AdapterState

if TYPE_CHECKING:
    from .manager import ClusterManager

__all__ = ["ClusterLink"]

log = logging.getLogger("siocluster.adapter")


class ClusterLink:
    """The :class:`~.transport.TransportEvents` of one :class:`ClusterManager`."""

    def __init__(self, manager: ClusterManager) -> None:
        self._manager = manager
        self._wire = manager.wire
        self.peers = manager.peers
        self._tasks: set[asyncio.Task[Any]] = set()
        self._heartbeat: asyncio.Task[None] | None = None
        self.closed = False
        # Counters
        self.undeliverable = 0  # directed frames for sockets no longer here
        self.skipped = 0  # frames dropped after the header: no matching rooms here
        self.errors = 0

    # Lifecycle

    def start(self) -> None:
        self._heartbeat = asyncio.create_task(self._heartbeat_forever())

    async def stop(self) -> None:
        self.closed = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _heartbeat_forever(self) -> None:
        manager = self._manager
        while True:
            await asyncio.sleep(manager.heartbeat_interval_s)
            now = time.monotonic()
            manager.wire.send(MsgType.HEARTBEAT, "/", None, sequenced=False, bufferable=False)
            for node in self.peers.expire(now):
                log.warning("peer %s missed its heartbeats; forgetting it", node)
                self.forget_peer(node)
            manager.calls.expire_acks(now)

    # TransportEvents

    def peer_up(self, node: str) -> None:
        if self.peers.seen(node, time.monotonic()):
            log.debug("peer %s is up", node)

    def peer_down(self, node: str) -> None:
        if node in self.peers:
            log.info("peer %s is gone", node)
        self.forget_peer(node)

    def state_changed(self, state: AdapterState) -> None:
        if state == AdapterState.DEGRADED:
            self.peers.freeze()
        elif state == AdapterState.CONNECTED:
            self.peers.thaw(time.monotonic())

    def forget_peer(self, node: str) -> None:
        self.peers.forget(node)
        self._wire.dedupe.forget(node)
        self._manager.calls.peer_gone(node)

    async def frame_received(self, frame: bytes) -> None:
        if self.closed:
            return
        try:
            parsed = self._wire.accept(frame)
            if parsed is None:
                return
            self.peers.seen(parsed.header.node, time.monotonic())
            await self._dispatch(parsed)
        except ProtocolError as exc:
            self.errors += 1
            log.warning("dropping a bad frame: %s", exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.errors += 1
            log.exception("error handling a cross-worker frame")

    # Dispatch

    async def _dispatch(self, parsed: ParsedFrame) -> None:
        header = parsed.header
        kind = parsed.type
        calls = self._manager.calls
        if kind in (MsgType.HEARTBEAT, MsgType.HELLO):
            return
        if kind == MsgType.BYE:
            self.forget_peer(header.node)
            return
        if kind == MsgType.ACK:
            await calls.on_ack(parsed.data())
            return
        if kind in (MsgType.FETCH_RESP, MsgType.SSE_RESP):
            calls.requests.reply(header.rid, header.node, parsed.data())
            return
        if kind == MsgType.SSE:
            self._spawn(calls.on_server_side_frame(parsed))
            return
        if kind == MsgType.FETCH_REQ:
            await calls.answer_fetch(header)
            return
        # Selector-addressed operations: skip the body unless we hold a target.
        manager = self._manager
        if not holds_any(manager.rooms.get(header.nsp), header.rooms):
            self.skipped += 1
            if header.to is not None:
                self.undeliverable += 1
            return
        if kind == MsgType.BROADCAST:
            event, args, ack_id = parsed.data()
            callback = None
            if ack_id:
                callback = functools.partial(manager.calls.return_ack, header.node, ack_id)
            await manager._deliver(event, args, header.nsp, header.rooms, header.exclude,
                                   callback)
        elif kind == MsgType.JOIN:
            await manager._join_local(parsed.data(), header.nsp, header.rooms, header.exclude)
        elif kind == MsgType.LEAVE:
            await manager._leave_local(parsed.data(), header.nsp, header.rooms, header.exclude)
        elif kind == MsgType.DISCONNECT:
            close = bool(parsed.data())
            self._spawn(manager._disconnect_local(header.nsp, header.rooms, header.exclude,
                                                  close))
