"""Per-socket outbound queues: their age, and a cap on the bytes they hold.

python-engineio gives every session an unbounded ``asyncio.Queue`` of packets
to send, made by the server's public ``create_queue()``: a client that reads
slower than a busy room is written to grows the worker's memory without
limit.  :func:`install_outbound_queues` replaces ``create_queue`` on the app's
Engine.IO server with :class:`OutboundQueue`, which

* counts the bytes of the packets it holds; past ``[limits]
  max_outbound_bytes`` it drops what it holds, refuses more, and calls
  ``on_overflow``: the worker closes that session as a *transport error*, which
  with connection-state recovery on is recoverable (the packets are in the
  log), and counts it (``siocluster_guard_events_total{kind="outbound_overflow"}``);
* remembers when it was made, that is when its session was: a draining worker
  leaves a session that just did its polling handshake alone until its
  WebSocket upgrade is through (:mod:`worker.drain`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from .drain import close_session

__all__ = ["OutboundQueue", "install_outbound_queues", "packet_size"]

log = logging.getLogger("siocluster.worker.outbound")

# What a packet costs beyond its payload (the Packet object, the queue slot).
PACKET_OVERHEAD = 64


def packet_size(pkt: Any) -> int:
    data = getattr(pkt, "data", None)
    if isinstance(data, str | bytes | bytearray):
        return len(data) + PACKET_OVERHEAD
    return PACKET_OVERHEAD


class OutboundQueue(asyncio.Queue[Any]):
    def __init__(self, cap_bytes: int, on_overflow: Callable[[OutboundQueue], None]) -> None:
        super().__init__()
        self.cap_bytes = cap_bytes  # 0: no cap
        self.bytes = 0
        self.overflowed = False
        self.created = time.monotonic()
        self._on_overflow = on_overflow

    def put_nowait(self, item: Any) -> None:
        if item is None:  # python-engineio's "writer, exit" sentinel
            asyncio.Queue.put_nowait(self, item)
            return
        if self.overflowed:
            return
        data = getattr(item, "data", None)
        size = (len(data) if type(data) is str or type(data) is bytes else 0) + PACKET_OVERHEAD
        if self.cap_bytes and self.bytes + size > self.cap_bytes:
            self.overflowed = True
            while not self.empty():  # drop what it holds: the session is closed anyway
                super().get_nowait()
                self.task_done()
            self.bytes = 0
            self._on_overflow(self)
            return
        self.bytes += size
        asyncio.Queue.put_nowait(self, item)

    def get_nowait(self) -> Any:
        item = asyncio.Queue.get_nowait(self)
        if item is not None:
            data = getattr(item, "data", None)
            size = (len(data) if type(data) is str or type(data) is bytes else 0)
            self.bytes = max(0, self.bytes - size - PACKET_OVERHEAD)
        return item


def install_outbound_queues(eio: Any, cap_bytes: int, on_overflow: Callable[[str], None]) -> None:
    """Make every new session of ``eio`` use an :class:`OutboundQueue`.

    ``on_overflow(eio_sid)`` is called (once) after a session's queue overflowed
    and the session was closed.
    """

    closing: set[asyncio.Task[None]] = set()

    def overflowed(queue: OutboundQueue) -> None:
        for sid, sock in list(eio.sockets.items()):
            if sock.queue is queue:
                task = asyncio.ensure_future(_close(sid, sock))
                closing.add(task)
                task.add_done_callback(closing.discard)
                return

    async def _close(sid: str, sock: Any) -> None:
        # abort: no CLOSE packet (the queue is what overflowed); a transport error is
        # what the client sees, and python-socketio reports.
        await close_session(eio, sid, reason=eio.reason.TRANSPORT_ERROR, abort=True)
        if not sock.upgraded:
            asyncio.Queue.put_nowait(sock.queue, None)  # end a pending long-poll too
        on_overflow(sid)

    def create_queue(*args: Any, **kwargs: Any) -> OutboundQueue:
        return OutboundQueue(cap_bytes, overflowed)

    eio.create_queue = create_queue
