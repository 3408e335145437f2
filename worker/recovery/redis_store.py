"""Connection-state recovery on the ``redis`` backend: Redis Streams and session keys.

Theory of operation
-------------------

With ``local`` the master is the sequencer and the store (:mod:`.store`); with
``redis`` there is one Redis for many hosts and no common master, so Redis
takes that role, as in socket.io's ``@socket.io/redis-streams-adapter``:

* **the log** is the stream ``<channel>:recovery:log``.  A worker's emit
  is an ``XADD`` (Redis numbers it: the entry id is the offset); every worker
  of every host reads the stream (``XREAD``, from the last id it delivered)
  and delivers each entry to its own sockets with the id appended.  Trimmed
  by age (``XTRIM MINID`` at Redis' clock minus the window, every second) and
  by size (``XADD MAXLEN ~`` a count worked out from ``max_log_bytes`` and the
  entries' mean size).
* **sessions** are keys ``<channel>:recovery:session:<pid>`` (msgpack), written
  through by their owner like the master's records, with a TTL of the window:
  the owner renews its live sessions' TTL every third of the window, so a
  SIGKILLed worker's sessions stay recoverable for at least two thirds of the
  window after its death and then expire; a recoverable close restarts the
  TTL, a deliberate one deletes the key.
* **a restore** runs in the reader's task, between two ``XREAD``: the session
  key, then the client's offset must still be in the stream (else ``trimmed``:
  a fresh session, never a partial replay, as Node's streams adapter), then
  the entries after it up to the last one this worker delivered are the
  missed ones; later ones reach the socket through the reader, queued behind
  the replay.  Exactly once, in one order.

Outages: each command that fails is retried in order after a backoff; the
reader resumes from its last id, so nothing emitted while this worker could
not read is lost (pub/sub drops it).  What waits to be written is bounded by
``[adapter] outage_buffer_bytes``; past it the oldest emits are dropped and
counted.  While Redis is away, emits wait: they are delivered (local
sockets included) once they are in the stream, so every client sees one order
with offsets.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
from redis.exceptions import RedisError

from .. import control
from .store import Entry, Reason, matches

if TYPE_CHECKING:
    from .agent import RecoveryAgent

__all__ = ["RedisRecoveryLink", "stream_id"]

log = logging.getLogger("siocluster.recovery.redis")

_FAILURES = (RedisError, OSError, asyncio.TimeoutError)
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode
READ_BLOCK_MS = 100
READ_COUNT = 500


def stream_id(offset: str) -> tuple[int, int] | None:
    """A Redis stream id as a comparable tuple; None when it is not one."""
    ms, sep, seq = offset.partition("-")
    if not sep or not ms.isdigit() or not seq.isdigit():
        return None
    return int(ms), int(seq)


class RedisRecoveryLink:
    def __init__(
        self, client_factory: Callable[[], Any], channel: str, *, window_s: float,
        max_log_bytes: int, outage_buffer_bytes: int,
    ) -> None:
        self._factory = client_factory
        self.key = f"{channel}:recovery:log"
        self.session_prefix = f"{channel}:recovery:session:"
        self.window_ms = max(1, int(window_s * 1000))
        self.max_log_bytes = max_log_bytes
        self.outage_buffer_bytes = outage_buffer_bytes
        self.agent: RecoveryAgent | None = None
        self._out: collections.deque[control.ControlMessage] = collections.deque()
        self._out_bytes = 0
        self._wake = asyncio.Event()
        self._restores: collections.deque[control.RestoreRequest] = collections.deque()
        self._tasks: list[asyncio.Task[None]] = []
        self.last_id = "0-0"
        self._mean = 256.0  # running mean of an entry's size, for MAXLEN
        # Counters
        self.appended = 0
        self.delivered = 0
        self.dropped = 0
        self.failures = 0
        self.degraded = False

    # Lifecycle

    async def start(self, agent: RecoveryAgent) -> None:
        self.agent = agent
        self._writer_client = self._factory()
        self._reader_client = self._factory()
        newest = await self._reader_client.xrevrange(self.key, "+", "-", count=1)
        if newest:
            self.last_id = _text(newest[0][0])
        self._tasks = [asyncio.create_task(self._write_forever()),
                       asyncio.create_task(self._read_forever()),
                       asyncio.create_task(self._upkeep_forever())]

    async def close(self) -> None:
        with contextlib.suppress(*_FAILURES):
            await asyncio.wait_for(self._flush_now(), 2.0)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for client in (getattr(self, "_writer_client", None),
                       getattr(self, "_reader_client", None)):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()

    def status(self) -> dict[str, int]:
        return {"appended": self.appended, "delivered": self.delivered,
                "dropped": self.dropped, "redis_failures": self.failures,
                "degraded": int(self.degraded), "waiting": len(self._out)}

    # What the agent sends (the master's messages on the local backend)

    def send(self, message: control.ControlMessage) -> None:
        if isinstance(message, control.RestoreRequest):
            self._restores.append(message)
            return
        if isinstance(message, control.LogAppend):
            size = len(message.payload)
            while self._out and self._out_bytes + size > self.outage_buffer_bytes:
                if not self._drop_oldest_append():
                    break
            self._out_bytes += size
        self._out.append(message)
        self._wake.set()

    def _drop_oldest_append(self) -> bool:
        for i, queued in enumerate(self._out):
            if isinstance(queued, control.LogAppend):
                del self._out[i]
                self._out_bytes -= len(queued.payload)
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.warning("redis unreachable: %d recoverable emits dropped so far "
                                "([adapter] outage_buffer_bytes)", self.dropped)
                return True
        return False

    # Writer: every command in order, each retried until it goes through

    async def _write_forever(self) -> None:
        backoff = 0.05
        while True:
            if not self._out:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                await self._flush_now()
                backoff = 0.05
                self._healthy()
            except _FAILURES as exc:
                self._failed("write", exc)
                await asyncio.sleep(backoff * (1 + random.random()))
                backoff = min(backoff * 2, 2.0)

    async def _flush_now(self) -> None:
        client = self._writer_client
        while self._out:
            message = self._out[0]
            await self._apply(client, message)
            self._out.popleft()
            if isinstance(message, control.LogAppend):
                self._out_bytes -= len(message.payload)

    async def _apply(self, client: Any, message: control.ControlMessage) -> None:
        if isinstance(message, control.LogAppend):
            size = len(message.payload) + 64
            self._mean += (size - self._mean) / 64
            maxlen = max(100, int(self.max_log_bytes / max(self._mean, 1.0)))
            await client.xadd(self.key, {
                "nsp": message.nsp, "rooms": _encode(message.rooms),
                "exclude": _encode(message.exclude), "payload": message.payload,
            }, maxlen=maxlen, approximate=True)
            self.appended += 1
        elif isinstance(message, control.SessionState):
            record = _encode({"sid": message.sid, "nsp": message.nsp,
                              "rooms": message.rooms, "data": message.data})
            await client.set(self.session_prefix + message.pid, record, px=self.window_ms)
        elif isinstance(message, control.SessionClosed):
            if message.recoverable:
                await client.pexpire(self.session_prefix + message.pid, self.window_ms)
            else:
                await client.delete(self.session_prefix + message.pid)

    # Reader: deliver the stream in order; restores between two reads

    async def _read_forever(self) -> None:
        backoff = 0.05
        client = self._reader_client
        while True:
            try:
                while self._restores:
                    await self._restore(client, self._restores[0])
                    self._restores.popleft()
                answer = await client.xread({self.key: self.last_id}, count=READ_COUNT,
                                            block=READ_BLOCK_MS)
                backoff = 0.05
                self._healthy()
            except _FAILURES as exc:
                self._failed("read", exc)
                await asyncio.sleep(backoff * (1 + random.random()))
                backoff = min(backoff * 2, 2.0)
                continue
            for _stream, entries in answer or ():
                for raw_id, fields in entries:
                    entry_id = _text(raw_id)
                    self.last_id = entry_id
                    message = _deliver(entry_id, fields)
                    if message is not None and self.agent is not None:
                        self.delivered += 1
                        await self.agent.on_deliver(message)

    async def _restore(self, client: Any, request: control.RestoreRequest) -> None:
        agent = self.agent
        assert agent is not None
        reply = await self._decide(client, request)
        if reply.reason:
            agent.counters[f"not_recovered/{reply.reason}"] += 1
        agent.on_restore_reply(reply)

    async def _decide(self, client: Any, request: control.RestoreRequest) -> control.RestoreReply:
        def refused(reason: Reason) -> control.RestoreReply:
            return control.RestoreReply(rid=request.rid, pid=request.pid, reason=str(reason))

        raw = await client.get(self.session_prefix + request.pid)
        if raw is None:
            return refused(Reason.UNKNOWN)
        try:
            record = _decode(raw)
            sid, nsp, rooms, data = record["sid"], record["nsp"], record["rooms"], record["data"]
        except (msgspec.DecodeError, KeyError, TypeError):
            return refused(Reason.UNKNOWN)
        if nsp != request.nsp:
            return refused(Reason.NAMESPACE)
        offset = request.offset
        if offset is None or stream_id(offset) is None:
            return refused(Reason.BAD_OFFSET)  # as Node: no offset, no recovery
        if not await client.xrange(self.key, offset, offset, count=1):
            return refused(Reason.TRIMMED)
        missed: list[control.LogDeliver] = []
        upto = stream_id(self.last_id) or (0, 0)
        if (stream_id(offset) or (0, 0)) < upto:
            held = (*rooms, sid)
            for raw_id, fields in await client.xrange(self.key, f"({offset}", self.last_id):
                message = _deliver(_text(raw_id), fields)
                if message is not None and matches(held, nsp, _as_entry(message)):
                    missed.append(message)
        return control.RestoreReply(rid=request.rid, pid=request.pid, sid=sid, rooms=rooms,
                                    data=data, missed=missed)

    # Upkeep: session TTLs of live sockets, and the log's age

    async def _upkeep_forever(self) -> None:
        renew_every = max(0.2, self.window_ms / 3000)
        last_renew = 0.0
        while True:
            await asyncio.sleep(1.0 if renew_every >= 1.0 else renew_every)
            try:
                now = time.monotonic()
                if now - last_renew >= renew_every and self.agent is not None:
                    last_renew = now
                    pids = list(self.agent.pids.values())
                    for i in range(0, len(pids), 500):
                        pipe = self._writer_client.pipeline(transaction=False)
                        for pid in pids[i:i + 500]:
                            pipe.pexpire(self.session_prefix + pid, self.window_ms)
                        await pipe.execute()
                seconds, micros = await self._writer_client.time()
                horizon = int(seconds) * 1000 + int(micros) // 1000 - self.window_ms
                await self._writer_client.xtrim(self.key, minid=f"{horizon}-0",
                                                approximate=True)
            except _FAILURES as exc:
                self._failed("upkeep", exc)

    def _healthy(self) -> None:
        if self.degraded:
            log.info("recovery store on redis reachable again")
        self.degraded = False

    def _failed(self, what: str, exc: BaseException) -> None:
        self.failures += 1
        if not self.degraded:
            log.warning("recovery store on redis: %s failed: %r; retrying", what, exc)
        self.degraded = True


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _deliver(entry_id: str, fields: dict[Any, Any]) -> control.LogDeliver | None:
    try:
        return control.LogDeliver(
            offset=entry_id, nsp=_text(fields[b"nsp"]), rooms=_decode(fields[b"rooms"]),
            exclude=_decode(fields[b"exclude"]), payload=bytes(fields[b"payload"]),
        )
    except (KeyError, msgspec.DecodeError, TypeError):
        return None


def _as_entry(message: control.LogDeliver) -> Entry:
    return Entry(0, 0.0, message.nsp, tuple(message.rooms), tuple(message.exclude), b"")
