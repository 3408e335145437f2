"""The ``local`` backend: a full mesh of Unix sockets between the workers of one host.

Theory of operation
-------------------

Each worker listens on ``<runtime_dir>/adapter-<node>.sock`` where ``node`` is
``<slot hex>.<generation hex>``, the same prefix its sids carry.  The file name
therefore says who listens there, and a sid says which socket reaches its
owner: an emit to a remote sid goes to exactly one peer.

Every pair of workers uses two streams, one per direction: a worker *writes*
only on the streams it opened (outbound) and *reads* only on those it accepted
(inbound).  That needs no tie-breaking between simultaneous dials.  An outbound
stream starts with a HELLO frame naming the dialler, so the acceptor knows the
peer at once and dials back if it has no stream to it yet.

Discovery: at start the worker dials every ``adapter-*.sock`` it finds, then
waits (briefly) until each of those peers has dialled back, so it is not deaf
when it reports ready.  A rescan every ``scan_interval_s`` catches anything
missed.  EOF on either stream means the peer is gone (crash, restart with a
new generation, scale-down): it is reported at once, so nobody waits for it.

Streams carry ``u32 length + frame`` (:mod:`worker.framing`).  Writes never
block the emitter: a peer whose unsent backlog exceeds ``max_backlog_bytes``
(a stuck loop) gets its frames dropped and counted instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import os
from typing import Any

from balancer.sid import parse_sid

from ..control import TransportStatus
from ..framing import FrameReader, FrameTooLarge, TruncatedFrame, pack
from .envelope import Envelope, MsgType, parse_header, serialize
from .exceptions import BackendError, ProtocolError
from .transport import AdapterState, Owner, TransportEvents

__all__ = ["LocalTransport", "node_id"]

log = logging.getLogger("siocluster.adapter.local")



def node_id(slot: int, generation: int) -> str:
    return f"{slot:x}.{generation:x}"


class LocalTransport:
    name = "local"
    dynamic_rooms = False

    def __init__(
        self,
        runtime_dir: str,
        slot: int,
        generation: int,
        *,
        # Timeouts
        scan_interval_s: float = 1.0,
        mesh_timeout_s: float = 2.0,
        # Limits
        max_frame_bytes: int | None = 64 * 1024 * 1024,
        max_backlog_bytes: int | None = 16 * 1024 * 1024,
    ) -> None:
        self.node = node_id(slot, generation)
        self.runtime_dir = runtime_dir
        self.path = self._path_for(self.node)
        self.scan_interval_s = scan_interval_s
        self.mesh_timeout_s = mesh_timeout_s
        self.max_frame_bytes = max_frame_bytes
        self.max_backlog_bytes = max_backlog_bytes
        self._state = AdapterState.CONNECTING
        self._events: TransportEvents | None = None
        self._server: asyncio.AbstractServer | None = None
        self._out: dict[str, asyncio.StreamWriter] = {}
        self._dialling: set[str] = set()
        self._inbound: dict[str, asyncio.StreamWriter] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._scanner: asyncio.Task[None] | None = None
        # Counters
        self.sent = 0
        self.dropped = 0
        self.errors = 0

    def _path_for(self, node: str) -> str:
        return os.path.join(self.runtime_dir, f"adapter-{node}.sock")

    @property
    def state(self) -> AdapterState:
        return self._state

    def _closing(self) -> bool:
        return self._state == AdapterState.CLOSED

    def _set_state(self, state: AdapterState) -> None:
        if state != self._state:
            log.debug("local transport %s: %s -> %s", self.node, self._state.name, state.name)
            self._state = state
            if self._events is not None:
                self._events.state_changed(state)

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # Lifecycle

    async def start(self, events: TransportEvents) -> None:
        self._events = events
        if not os.path.isdir(self.runtime_dir):
            raise BackendError(f"runtime directory {self.runtime_dir} does not exist")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        try:
            self._server = await asyncio.start_unix_server(self._accept, path=self.path)
        except OSError as exc:
            raise BackendError(f"cannot listen on {self.path}: {exc.strerror}") from None
        os.chmod(self.path, 0o600)
        dialled = await self._scan()
        # Not deaf at "ready": wait until the peers we found have dialled back.
        deadline = asyncio.get_running_loop().time() + self.mesh_timeout_s
        while asyncio.get_running_loop().time() < deadline:
            if all(node in self._inbound for node in dialled if node in self._out):
                break
            await asyncio.sleep(0.01)
        self._scanner = asyncio.create_task(self._scan_forever())
        self._set_state(AdapterState.CONNECTED)

    async def close(self) -> None:
        self._set_state(AdapterState.CLOSED)
        if self._scanner is not None:
            self._scanner.cancel()
        if self._server is not None:
            self._server.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        writers = [*self._out.values(), *self._inbound.values()]
        for writer in writers:
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in writers:
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        self._out.clear()
        self._inbound.clear()

    # Discovery

    async def _scan(self) -> list[str]:
        found = []
        for path in glob.glob(os.path.join(glob.escape(self.runtime_dir), "adapter-*.sock")):
            node = os.path.basename(path)[len("adapter-") : -len(".sock")]
            if node != self.node and node not in self._out and node not in self._dialling:
                found.append(node)
        await asyncio.gather(*(self._dial(node) for node in found))
        return found

    async def _scan_forever(self) -> None:
        while True:
            await asyncio.sleep(self.scan_interval_s)
            try:
                await self._scan()
            except Exception:  # pragma: no cover - defensive: discovery must not die
                log.exception("peer scan failed")

    async def _dial(self, node: str) -> None:
        if node in self._out or node in self._dialling or self._state == AdapterState.CLOSED:
            return
        self._dialling.add(node)
        try:
            reader, writer = await asyncio.open_unix_connection(self._path_for(node))
        except (ConnectionRefusedError, FileNotFoundError):
            self._forget_stale(node)
            return
        except OSError as exc:
            self.errors += 1
            log.warning("cannot reach peer %s: %s", node, exc)
            return
        finally:
            self._dialling.discard(node)
        if self._closing():
            writer.close()
            return
        writer.write(pack(serialize(Envelope(MsgType.HELLO, self.node))))
        self._out[node] = writer
        assert self._events is not None
        self._events.peer_up(node)
        self._spawn(self._watch_outbound(node, reader, writer))

    def _forget_stale(self, node: str) -> None:
        """A refused socket of an older generation of our own slot is ours to remove."""
        owner = parse_sid(f"{node}.x")
        mine = parse_sid(f"{self.node}.x")
        if owner and mine and owner.slot == mine.slot and owner.generation < mine.generation:
            with contextlib.suppress(OSError):
                os.unlink(self._path_for(node))

    async def _watch_outbound(
        self, node: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # The peer never writes on our outbound stream: anything but EOF is noise.
        with contextlib.suppress(ConnectionError, OSError):
            while await reader.read(65536):
                pass
        if self._out.get(node) is writer:
            del self._out[node]
        writer.close()
        self._lost(node)

    def _lost(self, node: str) -> None:
        if self._events is not None and self._state != AdapterState.CLOSED:
            self._events.peer_down(node)

    # Inbound streams

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        node: str | None = None
        frames = FrameReader(reader, self.max_frame_bytes)
        try:
            frame = await frames.next()
            if frame is None:
                return
            hello = parse_header(frame)
            if hello.type != MsgType.HELLO:
                raise ProtocolError("inbound stream did not start with HELLO")
            node = hello.header.node
            self._inbound[node] = writer
            assert self._events is not None
            self._events.peer_up(node)
            if node not in self._out:
                self._spawn(self._dial(node))
            while (frame := await frames.next()) is not None:
                await self._events.frame_received(frame)
        except (ConnectionError, TruncatedFrame):
            pass
        except asyncio.CancelledError:
            pass  # closing: the stream server's callback must not log a cancelled task
        except (ProtocolError, FrameTooLarge) as exc:
            self.errors += 1
            log.warning("dropping stream from %s: %s", node or "unknown peer", exc)
        finally:
            writer.close()
            if node is not None:
                self._inbound_closed(node, writer)
            if task is not None:
                self._tasks.discard(task)

    def _inbound_closed(self, node: str, writer: asyncio.StreamWriter) -> None:
        """A peer's stream ended: forget it, and close our stream to it (it redials)."""
        if self._inbound.get(node) is writer:
            del self._inbound[node]
        out = self._out.pop(node, None)
        if out is not None:
            out.close()
        self._lost(node)

    # Sending

    def send_room(self, frame: bytes, key: str) -> None:
        self.send(frame, None)  # no room channels here: every worker hears it

    def interest(self, key: str, on: bool) -> None:
        return None

    def send(self, frame: bytes, to: str | None, *, bufferable: bool = True) -> None:
        if to is None:
            for writer in list(self._out.values()):
                self._write(writer, frame)
            return
        target = self._out.get(to)
        if target is None:
            self.dropped += 1
            return
        self._write(target, frame)

    def _write(self, writer: asyncio.StreamWriter, frame: bytes) -> None:
        if writer.is_closing():
            self.dropped += 1
            return
        backlog = writer.transport.get_write_buffer_size()
        if self.max_backlog_bytes is not None and backlog > self.max_backlog_bytes:
            self.dropped += 1
            return
        writer.write(pack(frame))
        self.sent += 1

    def owner_of(self, sid: str) -> str | Owner:
        owner = parse_sid(sid)
        if owner is None:
            return Owner.ANY
        node = node_id(owner.slot, owner.generation)
        if node in self._out:
            return node
        return Owner.GONE

    def status(self) -> TransportStatus:
        return TransportStatus(
            peers_connected=len(self._out),
            transport_sent=self.sent,
            transport_dropped=self.dropped,
            transport_errors=self.errors,
            buffered_bytes=sum(
                w.transport.get_write_buffer_size() for w in self._out.values()
            ),
        )
