"""The worker's side of connection-state recovery.

Theory of operation
-------------------

The sessions and the packet log live in the master (:mod:`.store`); this
agent wires one worker's python-socketio server to them over the control
channel, through public hooks and a subclass of the app's packet class (the
patches are in :mod:`.hooks`; the decisions here):

* **pid in the CONNECT reply**: python-socketio builds the reply with
  ``sio.packet_class(CONNECT, {"sid": sid})``; the app's packet class is
  replaced by a subclass (the documented ``serializer`` extension point) that
  adds the session's ``pid``.
* **emits**: the :class:`~worker.adapter.manager.ClusterManager` hands every
  emit without a callback to :meth:`RecoveryAgent.append` (a ``LogAppend`` to
  the master) instead of delivering it; the master numbers it and sends a
  ``LogDeliver`` to every worker, which delivers it to its own sockets with
  the offset appended as the last argument (:meth:`on_deliver`).  An emit
  waits while the channel to the master holds more than its high-water mark
  (``flow``: the stream's ``drain``), so a burst of emits from one handler is
  paced by the master instead of piling up in the worker.
* **session state**: the owner sends ``SessionState`` (sid, rooms, data) when a
  socket connects and after each room change or ``save_session``, coalesced
  to one message per session per loop iteration; ``SessionClosed`` when it
  goes (recoverable unless the client or the app disconnected it on purpose,
  as Node's rule).  A SIGKILLed worker sends nothing: the master marks its
  sessions disconnected when it sees the exit.
* **clients that do not strip offsets**: python-socketio's own clients (and
  any client on aiohttp or requests, by their User-Agent), or a client whose
  CONNECT auth says ``"siocluster_offsets": false``, get no pid and their
  events without the offset (delivered apart); they cannot recover anyway.
* **CONNECT with {pid, offset}**: ``_handle_connect`` (a private hook listed
  in :mod:`worker.libcontract`) asks the master first (``RestoreRequest``).
  On success the manager's ``pre_connect`` reuses the old sid, the connect
  handler is skipped when ``skip_middlewares`` (else it may refuse, which
  ends the session), the CONNECT reply carries the old pid (so the client
  sets ``recovered``), and ``connect`` rejoins the rooms, restores the data
  and replays the missed packets, then those that arrived meanwhile, before
  the socket takes live traffic again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from .. import control
from .hooks import install_hooks
from .store import Entry, Reason, Room, matches

__all__ = ["RecoveryAgent", "is_recovered"]

log = logging.getLogger("siocluster.recovery")

# Past this the client gets a fresh session (counted "timeout"); generous, because a
# master or Redis that slow has the CONNECT waiting anyway (socket.io-client allows 20 s).
RESTORE_TIMEOUT_S = 10.0
# python-socketio's clients send aiohttp's or requests' default User-Agent, and append
# an offset to the handler's arguments instead of stripping it.
PLAIN_USER_AGENT = re.compile(r"^(Python/\S+ aiohttp/|python-requests/)")
OPT_OUT_KEY = "siocluster_offsets"
_ENVIRON_KEY = "siocluster.recovered"
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode


def is_recovered(sio: Any, sid: str, namespace: str = "/") -> bool:
    """True while the connection ``sid`` is one that was recovered (Node's ``socket.recovered``)."""
    agent = getattr(sio, "siocluster_recovery", None)
    return bool(agent is not None and (namespace, sid) in agent.recovered_sids)


class _Pending:
    """A restore the master granted, until its socket has replayed everything."""

    __slots__ = ("after", "data", "eio_sid", "nsp", "pid", "queue", "replaying", "rooms", "sid")

    def __init__(self, reply: control.RestoreReply, pid: str, nsp: str,
                 offset: str | None) -> None:
        self.sid = reply.sid
        self.pid = pid
        self.nsp = nsp
        self.rooms: tuple[Room, ...] = tuple(reply.rooms)
        self.data = reply.data
        self.queue: collections.deque[control.LogDeliver] = collections.deque(reply.missed)
        self.replaying = False
        # Live packets at or before the client's offset are not queued again (a Redis
        # reader on this host may be behind the one that served the client before).
        self.after = _order(offset) if offset is not None else None


class RecoveryAgent:
    def __init__(
        self, sio: Any, manager: Any, send: Callable[[control.ControlMessage], None],
        *, skip_middlewares: bool, flow: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """``flow``: awaited after each emit's ``LogAppend``; it returns once the
        channel to the log has room (None: ``send`` bounds itself)."""
        self.sio = sio
        self.manager = manager
        self._send = send
        self.flow = flow
        self.skip_middlewares = skip_middlewares
        self.draining = False
        self._rids = itertools.count(1)
        self._waiting: dict[
            int, tuple[asyncio.Future[control.RestoreReply], str, str, str, str | None]] = {}
        self._pending: dict[tuple[str, str], _Pending] = {}  # (nsp, eio_sid) -> granted
        self._by_sid: dict[tuple[str, str], _Pending] = {}  # (nsp, sid) -> granted, replaying
        self.pids: dict[tuple[str, str], str] = {}  # (nsp, sid) -> pid
        self._data: dict[tuple[str, str], bytes] = {}
        self._reasons: dict[tuple[str, str], str] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._flush_scheduled = False
        self.recovered_sids: set[tuple[str, str]] = set()
        self.link: Any = None  # the redis store (worker.recovery.redis_store), if any
        self.plain: dict[str, set[str]] = {}  # nsp -> sids that get events without offsets
        self._plain_eio: set[tuple[str, str]] = set()  # (nsp, eio_sid), until pre_connect
        # Counters
        self.counters: collections.Counter[str] = collections.Counter()

    # Installation

    def install(self) -> None:
        self.sio.siocluster_recovery = self
        install_hooks(self.sio, self)
        self.manager.recovery = self

    async def before_connect(self, eio_sid: str, nsp: str, auth: Any) -> None:
        """A CONNECT arrived: ask to restore its session, or note that it wants no offsets."""
        if self._wants_plain(eio_sid, auth):
            self._plain_eio.add((nsp, eio_sid))
        elif isinstance(auth, dict) and isinstance(auth.get("pid"), str):
            await self._ask_restore(eio_sid, nsp, auth)

    def after_connect(self, nsp: str, eio_sid: str) -> None:
        """python-socketio has handled the CONNECT (accepted or not)."""
        self._plain_eio.discard((nsp, eio_sid))
        self._abandon(nsp, eio_sid)

    def skips_event(self, event: str, nsp: str, args: tuple[Any, ...]) -> bool:
        """Whether the app's handler is skipped; notes why a socket disconnects."""
        if event == "connect" and args:
            pending = self._by_sid.get((nsp, args[0]))
            if pending is not None and self.skip_middlewares:
                return True
        elif event == "disconnect" and len(args) >= 2:
            self._reasons[(nsp, args[0])] = str(args[1])
        return False

    def _wants_plain(self, eio_sid: str, auth: Any) -> bool:
        if isinstance(auth, dict) and OPT_OUT_KEY in auth:
            return auth[OPT_OUT_KEY] is False
        environ = self.sio.environ.get(eio_sid, {})
        return bool(PLAIN_USER_AGENT.match(str(environ.get("HTTP_USER_AGENT", ""))))

    # Packets: pid in the CONNECT reply

    def pid_for(self, nsp: str, sid: str) -> str | None:
        return self.pids.get((nsp, sid))

    # Restore

    async def _ask_restore(self, eio_sid: str, nsp: str, auth: dict[str, Any]) -> None:
        pid = auth["pid"]
        offset = auth.get("offset")
        rid = next(self._rids)
        future: asyncio.Future[control.RestoreReply] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = (future, eio_sid, nsp, pid,
                              offset if isinstance(offset, str) else None)
        self._send(control.RestoreRequest(
            rid=rid, pid=pid, offset=offset if isinstance(offset, str) else None, nsp=nsp
        ))
        try:
            reply = await asyncio.wait_for(future, RESTORE_TIMEOUT_S)
        except TimeoutError:
            self.counters[f"not_recovered/{Reason.TIMEOUT}"] += 1
            return
        finally:
            self._waiting.pop(rid, None)
        if reply.reason:
            log.debug("no recovery for %s: %s", pid, reply.reason)

    def on_restore_reply(self, reply: control.RestoreReply) -> None:
        """From the control reader, in order with LogDeliver: register before any newer packet."""
        waiting = self._waiting.get(reply.rid)
        if waiting is None:
            if not reply.reason:  # granted after we gave up waiting: give it back
                self._send(control.SessionClosed(pid=reply.pid, recoverable=True))
            return
        future, eio_sid, nsp, pid, offset = waiting
        if not reply.reason:
            pending = _Pending(reply, pid, nsp, offset)
            self._pending[(nsp, eio_sid)] = pending
            self._by_sid[(nsp, pending.sid)] = pending
        if not future.done():
            future.set_result(reply)

    def restored_sid(self, eio_sid: str, nsp: str) -> str | None:
        """For the manager's ``pre_connect``: the sid to reuse, or None for a fresh one."""
        pending = self._pending.get((nsp, eio_sid))
        if pending is None:
            return None
        self.pids[(nsp, pending.sid)] = pending.pid
        return pending.sid

    def still_here(self, nsp: str, sid: str) -> None:
        """A granted restore whose sid is still live here: a fresh session instead."""
        pending = self._by_sid.pop((nsp, sid), None)
        if pending is not None:
            self._pending = {k: v for k, v in self._pending.items() if v is not pending}
        self.counters["not_recovered/still_connected"] += 1

    def fresh_sid(self, nsp: str, sid: str, eio_sid: str) -> None:
        if (nsp, eio_sid) in self._plain_eio:
            self.plain.setdefault(nsp, set()).add(sid)
            return
        self.pids[(nsp, sid)] = secrets.token_urlsafe(12)

    def _abandon(self, nsp: str, eio_sid: str) -> None:
        """After python-socketio's connect: a granted restore that did not connect."""
        pending = self._pending.pop((nsp, eio_sid), None)
        if pending is None or pending.replaying:
            return
        self._by_sid.pop((nsp, pending.sid), None)
        self.pids.pop((nsp, pending.sid), None)
        if self.draining or eio_sid not in self.sio.eio.sockets:
            # The connection went away before the CONNECT completed: still recoverable.
            self._send(control.SessionClosed(pid=pending.pid, recoverable=True))
            return
        self.counters[f"not_recovered/{Reason.REFUSED}"] += 1
        self._send(control.SessionClosed(pid=pending.pid, recoverable=False))

    async def connected(self, sid: str, nsp: str) -> None:
        """From the manager's ``connect``: the CONNECT reply is out."""
        key = (nsp, sid)
        pending = self._by_sid.get(key)
        if pending is None:
            self._mark_dirty(key)
            return
        eio_sid = self.manager.eio_sid_from_sid(sid, nsp)
        self._pending.pop((nsp, eio_sid), None)
        pending.replaying = True
        for room in pending.rooms:
            if room != sid:
                self.manager.basic_enter_room(sid, nsp, room)
        if pending.data:
            with contextlib.suppress(Exception):
                data = _decode(pending.data)
                await self.sio.save_session(sid, data, namespace=nsp)
        self._data[key] = pending.data
        self.recovered_sids.add(key)
        self.counters["recovered"] += 1
        # Replay; packets that arrive meanwhile join the queue (see on_deliver).
        while pending.queue:
            item = pending.queue.popleft()
            event, args = _decode(item.payload)
            await self.manager.deliver_to_sid(sid, nsp, event, [*args, item.offset])
            self.counters["replayed"] += 1
        del self._by_sid[key]
        self._mark_dirty(key)

    # Live packets

    def append(
        self, event: str, args: list[Any], nsp: str, rooms: tuple[Room, ...],
        exclude: tuple[Room, ...],
    ) -> None:
        payload = _encode([event, args])
        self._send(control.LogAppend(nsp=nsp, rooms=list(rooms), exclude=list(exclude),
                                     payload=payload))

    async def on_deliver(self, msg: control.LogDeliver) -> None:
        exclude = tuple(msg.exclude)
        if self._by_sid:
            entry = Entry(0, 0.0, msg.nsp, tuple(msg.rooms), exclude, b"")
            held: list[Room] = []
            order = _order(msg.offset)
            for (nsp, sid), pending in self._by_sid.items():
                if pending.after is not None and order is not None and order <= pending.after:
                    held.append(sid)  # it had it already
                    continue
                if matches((*pending.rooms, sid), nsp, entry):
                    pending.queue.append(msg)
                    held.append(sid)
            exclude = (*exclude, *held)
        event, args = _decode(msg.payload)
        plain = self.plain.get(msg.nsp)
        if plain:
            entry = Entry(0, 0.0, msg.nsp, tuple(msg.rooms), exclude, b"")
            to_plain = [s for s in plain
                        if matches(self.manager.get_rooms(s, msg.nsp), msg.nsp, entry)]
            if to_plain:
                exclude = (*exclude, *to_plain)
                await self.manager.deliver_logged(event, list(args), msg.nsp,
                                                  tuple(to_plain), ())
        await self.manager.deliver_logged(event, [*args, msg.offset], msg.nsp,
                                          tuple(msg.rooms), exclude)

    # Session state, write-through

    def session_saved(self, nsp: str, sid: str, session: Any) -> None:
        key = (nsp, sid)
        if key not in self.pids:
            return
        try:
            self._data[key] = _encode(session)
        except (TypeError, ValueError):
            self.counters["unserializable_session"] += 1
            self._data[key] = b""
        self._mark_dirty(key)

    def rooms_changed(self, nsp: str, sid: str) -> None:
        if (nsp, sid) in self.pids and (nsp, sid) not in self._by_sid:
            self._mark_dirty((nsp, sid))

    def _mark_dirty(self, key: tuple[str, str]) -> None:
        self._dirty.add(key)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, set()
        for nsp, sid in dirty:
            pid = self.pids.get((nsp, sid))
            if pid is None or not self.manager.is_connected(sid, nsp):
                continue
            rooms = [r for r in self.manager.get_rooms(sid, nsp) if r != sid]
            self._send(control.SessionState(
                pid=pid, sid=sid, nsp=nsp, rooms=rooms, data=self._data.get((nsp, sid), b"")
            ))

    def gone(self, sid: str, nsp: str) -> None:
        """From the manager's ``basic_disconnect``."""
        key = (nsp, sid)
        plain = self.plain.get(nsp)
        if plain is not None:
            plain.discard(sid)
        pid = self.pids.pop(key, None)
        reason = self._reasons.pop(key, "")
        self._data.pop(key, None)
        self._dirty.discard(key)
        self.recovered_sids.discard(key)
        if pid is None or key in self._by_sid:
            return
        deliberate = reason in ("client disconnect", "server disconnect")
        if reason == "server disconnect" and self.draining:
            deliberate = False  # we close it so that it recovers on another worker
        self._send(control.SessionClosed(pid=pid, recoverable=not deliberate))

    async def prepare_drain(self) -> None:
        """Before a drain closes every session: they are recoverable elsewhere, with the
        session data as it is now (also what was changed in place without a save)."""
        self.draining = True
        for nsp, sid in list(self.pids):
            with contextlib.suppress(Exception):
                session = await self.sio.get_session(sid, namespace=nsp)
                self._data[(nsp, sid)] = _encode(session)
        self._dirty.update(self.pids)
        self.flush()

    def status(self) -> dict[str, int]:
        out = dict(self.counters)
        out["sessions"] = len(self.pids)
        if self.link is not None:
            out.update(self.link.status())
        return out


def _order(offset: str) -> tuple[str, int] | None:
    """An offset as a comparable key: (epoch or ms, seq); both stores write ``X-N``."""
    head, sep, seq = offset.rpartition("-")
    if not sep or not seq.isdigit():
        return None
    return (head.rjust(20, "0"), int(seq))

