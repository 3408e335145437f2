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
import collections
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


class OutboundQueue:
    """The queue python-engineio sends a session's packets from (the API of
    ``asyncio.Queue`` that it uses: ``put``, ``put_nowait``, ``get``,
    ``get_nowait``, ``task_done``, ``join``, ``empty``, ``qsize``).

    ``get()`` returns a plain Future rather than a coroutine.  python-engineio
    waits for a packet with ``asyncio.wait_for(queue.get(), timeout)``, and
    ``wait_for`` wraps a coroutine in a new Task; given a Future it waits on that
    Future itself.  On a busy socket that is a Task, its registration and two
    trips through the event loop saved per wake-up of the writer (measured in
    the fan-out: see the README, "Benchmarks").  A put hands the packet straight
    to the oldest waiting Future that is not cancelled, so the order is the
    order of the puts.
    """

    __slots__ = ("_finished", "_getters", "_items", "_on_overflow", "_unfinished", "bytes",
                 "cap_bytes", "created", "overflowed")

    def __init__(self, cap_bytes: int, on_overflow: Callable[[OutboundQueue], None]) -> None:
        self.cap_bytes = cap_bytes  # 0: no cap
        self.bytes = 0
        self.overflowed = False
        self.created = time.monotonic()
        self._on_overflow = on_overflow
        self._items: collections.deque[Any] = collections.deque()
        self._getters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._unfinished = 0
        self._finished: asyncio.Event | None = None

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return False

    def put_nowait(self, item: Any) -> None:
        if item is not None:  # None: python-engineio's "writer, exit" sentinel, always queued
            if self.overflowed:
                return
            data = getattr(item, "data", None)
            size = (len(data) if type(data) is str or type(data) is bytes else 0) \
                + PACKET_OVERHEAD
            if self.cap_bytes and self.bytes + size > self.cap_bytes:
                self._overflow()
                return
            self.bytes += size
        self._items.append(item)
        self._unfinished += 1
        getters = self._getters
        while getters and self._items:
            getter = getters.popleft()
            if not getter.done():  # (a cancelled wait)
                getter.set_result(self.get_nowait())

    async def put(self, item: Any) -> None:
        self.put_nowait(item)

    def get_nowait(self) -> Any:
        if not self._items:
            raise asyncio.QueueEmpty
        item = self._items.popleft()
        if item is not None:
            data = getattr(item, "data", None)
            size = (len(data) if type(data) is str or type(data) is bytes else 0)
            self.bytes = max(0, self.bytes - size - PACKET_OVERHEAD)
        return item

    def get(self) -> asyncio.Future[Any]:
        """A Future of the next packet (already done when one is queued)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self._items and not self._getters:
            future.set_result(self.get_nowait())
        else:
            self._getters.append(future)
        return future

    def task_done(self) -> None:
        if self._unfinished <= 0:
            raise ValueError("task_done() called too many times")
        self._unfinished -= 1
        if self._unfinished == 0 and self._finished is not None:
            self._finished.set()

    async def join(self) -> None:
        if self._unfinished:
            if self._finished is None or self._finished.is_set():
                self._finished = asyncio.Event()
            await self._finished.wait()

    def _overflow(self) -> None:
        self.overflowed = True
        # Drop what it holds: the session is closed anyway.
        self._unfinished -= len(self._items)
        self._items.clear()
        self.bytes = 0
        if self._unfinished <= 0 and self._finished is not None:
            self._finished.set()
        self._on_overflow(self)


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
            sock.queue.put_nowait(None)  # end a pending long-poll too
        on_overflow(sid)

    def create_queue(*args: Any, **kwargs: Any) -> OutboundQueue:
        return OutboundQueue(cap_bytes, overflowed)

    eio.create_queue = create_queue
