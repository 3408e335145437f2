"""Requests and acks across workers: the part of the manager that waits for answers.

Theory of operation
-------------------

Acks.  An emit with a callback to a remote socket registers the callback here
(:meth:`ClusterCalls.register_ack`) under an ack id that travels in the frame.
The owner emits with a callback (:meth:`ClusterCalls.return_ack`) that sends an
ACK frame back to this node, which runs the user's callback
(:meth:`ClusterCalls.on_ack`).  A callback is forgotten when its owner dies, and
after :data:`ACK_TTL_S` when the client never answers.  ``sio.call`` is built
on that and so works across workers.

Requests (:meth:`ClusterCalls.fetch_sockets`,
:meth:`ClusterCalls.server_side_emit_with_ack`) go to every *live* peer
(:class:`~.peers.PeerTable`) and complete when each has answered or died
(:class:`~.requests.RequestTable`); after ``request_timeout_s`` they raise
:class:`~.exceptions.RequestTimeout` carrying the partial results.  The other
side answers in :meth:`ClusterCalls.answer_fetch` and
:meth:`ClusterCalls.on_server_side_frame`.

Handshake data.  python-socketio hands a connection's ``auth`` payload only to
the connect handler, so :meth:`ClusterCalls.wrap_connect_handler` remembers it
for :class:`SocketInfo` (a private hook, listed in :mod:`worker.libcontract`).
A socket travels in a FETCH_RESP frame as a :class:`SocketDescription`
(a msgspec Struct, checked on the way in); a description that does not fit is
counted (``errors``) and left out.

The manager owns this object and keeps the public methods (``fetch_sockets``,
``on_server_side``, ``server_side_emit``, ``server_side_emit_with_ack``) as
one-line delegates.  :func:`describe`, :func:`socket_info` and
:func:`flatten_acks` are pure.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import itertools
import logging
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from ..libcontract import server_hook, set_server_hook
from .delivery import Room
from .envelope import Header, MsgType, ParsedFrame
from .exceptions import AdapterError, EncodingError, ProtocolError, RequestTimeout
from .requests import RequestTable

if TYPE_CHECKING:
    from .manager import ClusterManager

__all__ = [
    "ACK_TTL_S",
    "ClusterCalls",
    "Handshake",
    "ServerSideHandler",
    "SocketDescription",
    "SocketInfo",
    "describe",
    "flatten_acks",
    "received_socket",
    "socket_info",
]

log = logging.getLogger("siocluster.adapter")

ServerSideHandler = Callable[..., Any]
H = TypeVar("H", bound=ServerSideHandler)

# A forwarded ack whose client never answers is forgotten after this long.
ACK_TTL_S = 300.0


@dataclasses.dataclass(frozen=True, slots=True)
class SocketInfo:
    """One socket as :meth:`ClusterManager.fetch_sockets` reports it."""

    id: str
    namespace: str
    rooms: tuple[Room, ...]
    handshake: dict[str, Any]  # headers, query, address, auth, time
    node: str  # the worker that holds it
    # The socket's session (python-socketio's save_session: Node's socket.data),
    # as it travels between workers; None when empty or when it cannot travel.
    data: Any = None


class Handshake(msgspec.Struct, frozen=True):
    """A socket's handshake as :class:`SocketInfo` reports it (``handshake``)."""

    headers: dict[str, str]  # lowercase names
    query: dict[str, str]
    address: str | None
    secure: bool
    auth: Any  # the CONNECT auth payload, as the client sent it


class SocketDescription(msgspec.Struct, frozen=True):
    """One socket in a FETCH_RESP frame."""

    id: str
    rooms: list[Room]
    handshake: Handshake
    data: Any = None  # the session (a worker of an earlier release sends none)


# Bytes in an auth payload stay bytes on the way out (the envelope carries them).
_AS_SENT = (bytes, bytearray, memoryview)


@dataclasses.dataclass(slots=True)
class _RemoteAck:
    callback: Callable[..., Any]
    node: str | None  # owner, when known: forgotten when it dies
    expires_at: float
    once: bool


def describe(
    sid: str, rooms: list[Room], environ: Mapping[str, Any], auth: Any, data: Any = None
) -> SocketDescription:
    """One socket's description as it travels in a FETCH_RESP frame."""
    headers = {
        key[5:].replace("_", "-").lower(): value
        for key, value in environ.items()
        if key.startswith("HTTP_") and isinstance(value, str)
    }
    query = dict(urllib.parse.parse_qsl(environ.get("QUERY_STRING", "")))
    handshake = Handshake(
        headers=headers,
        query=query,
        address=environ.get("REMOTE_ADDR"),
        secure=environ.get("wsgi.url_scheme") == "https",
        auth=auth,
    )
    return SocketDescription(id=sid, rooms=rooms, handshake=handshake, data=data)


def socket_info(desc: SocketDescription, nsp: str, node: str) -> SocketInfo:
    return SocketInfo(
        id=desc.id, namespace=nsp, rooms=tuple(desc.rooms),
        handshake=msgspec.structs.asdict(desc.handshake), node=node, data=desc.data,
    )


def received_socket(raw: Any, nsp: str, node: str) -> SocketInfo:
    """A description from a peer as a :class:`SocketInfo`; raises ``msgspec.ValidationError``."""
    return socket_info(msgspec.convert(raw, SocketDescription), nsp, node)


def flatten_acks(replies: dict[str, Any]) -> list[Any]:
    """The values of the workers that had a handler (``[handled, value]`` replies)."""
    return [value for handled, value in replies.values() if handled]


class ClusterCalls:
    """Acks, requests and server-side handlers of one :class:`ClusterManager`."""

    def __init__(self, manager: ClusterManager) -> None:
        self._manager = manager
        self.requests = RequestTable()
        self._handlers: dict[str, ServerSideHandler] = {}
        self._remote_acks: dict[int, _RemoteAck] = {}
        self._ack_ids = itertools.count(1)
        self._auth: dict[tuple[str, str], Any] = {}
        # Counters
        self.timeouts = 0
        self.handler_errors = 0
        self.malformed = 0  # socket descriptions that could not be read
        self.unsendable_sessions = 0  # described without their session (see _session)

    # Acks

    def register_ack(self, callback: Callable[..., Any], node: str | None, once: bool) -> int:
        ack_id = next(self._ack_ids)
        self._remote_acks[ack_id] = _RemoteAck(
            callback, node, time.monotonic() + ACK_TTL_S, once
        )
        return ack_id

    def drop_ack(self, ack_id: int) -> None:
        self._remote_acks.pop(ack_id, None)

    async def return_ack(self, origin: str, ack_id: int, *args: Any) -> None:
        self._manager.wire.send(MsgType.ACK, "/", [ack_id, list(args)], to=origin)

    async def on_ack(self, data: Any) -> None:
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

    def expire_acks(self, now: float) -> None:
        for ack_id, ack in list(self._remote_acks.items()):
            if ack.expires_at < now:
                del self._remote_acks[ack_id]

    def peer_gone(self, node: str) -> None:
        """Stop waiting for ``node``: its requests' replies and its sockets' acks."""
        self.requests.peer_gone(node)
        for ack_id, ack in list(self._remote_acks.items()):
            if ack.node == node:
                del self._remote_acks[ack_id]

    # Requests

    async def request(
        self, kind: MsgType, nsp: str, data: Any, targets: tuple[Room, ...],
        exclude: tuple[Room, ...], timeout: float | None,
        partial_result: Callable[[dict[str, Any]], Any], what: str,
    ) -> dict[str, Any]:
        manager = self._manager
        rid, pending = self.requests.open(manager.peers.live())
        try:
            manager.wire.send(kind, nsp, data, rooms=targets, exclude=exclude, rid=rid)
        except AdapterError:
            self.requests.abandon(rid)
            raise
        wait = manager.request_timeout_s if timeout is None else timeout
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

    async def fetch_sockets(
        self, targets: tuple[Room, ...], exclude: tuple[Room, ...], namespace: str,
        timeout: float | None,
    ) -> list[SocketInfo]:
        manager = self._manager
        found = [
            socket_info(await self.describe(namespace, sid, eio_sid), namespace, manager.node)
            for sid, eio_sid in manager._select(namespace, targets, exclude)
        ]
        if targets and not manager._plan(namespace, targets):
            return found  # every target is a sid on this worker
        replies = await self.request(
            MsgType.FETCH_REQ, namespace, None, targets, exclude, timeout,
            lambda partial: found + self._flatten_sockets(partial, namespace),
            "fetch_sockets",
        )
        return found + self._flatten_sockets(replies, namespace)

    async def answer_fetch(self, header: Header) -> None:
        sockets = [
            msgspec.to_builtins(await self.describe(header.nsp, sid, eio_sid),
                                builtin_types=_AS_SENT)
            for sid, eio_sid in self._manager._select(header.nsp, header.rooms, header.exclude)
        ]
        self._manager.wire.send(
            MsgType.FETCH_RESP, header.nsp, sockets, to=header.node, rid=header.rid
        )

    def _flatten_sockets(self, replies: dict[str, Any], nsp: str) -> list[SocketInfo]:
        out = []
        for node, sockets in replies.items():
            for raw in sockets or []:
                try:
                    out.append(received_socket(raw, nsp, node))
                except msgspec.ValidationError:
                    self.malformed += 1
        return out

    # Server-side emits

    def on_server_side(self, event: str, handler: H | None = None) -> Any:
        if handler is not None:
            self._handlers[event] = handler
            return handler

        def decorator(func: H) -> H:
            self._handlers[event] = func
            return func

        return decorator

    async def server_side_emit_with_ack(
        self, event: str, args: tuple[Any, ...], namespace: str, timeout: float | None
    ) -> list[Any]:
        replies = await self.request(
            MsgType.SSE, namespace, [event, list(args)], (), (), timeout,
            flatten_acks, "server_side_emit_with_ack",
        )
        return flatten_acks(replies)

    async def on_server_side_frame(self, parsed: ParsedFrame) -> None:
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
            send = self._manager.wire.send
            try:
                send(MsgType.SSE_RESP, header.nsp, [handled, value],
                     to=header.node, rid=header.rid)
            except EncodingError as exc:
                self.handler_errors += 1
                log.warning("server-side handler for %r returned %s", event, exc)
                send(MsgType.SSE_RESP, header.nsp, [False, None],
                     to=header.node, rid=header.rid)

    # Handshake data for fetch_sockets

    def wrap_connect_handler(self) -> None:
        """Remember each namespace connection's auth payload.

        python-socketio hands ``auth`` only to the connect handler, so this
        wraps the server's ``_handle_connect`` on this instance (a private hook,
        listed in :mod:`worker.libcontract`; without it ``auth`` is reported as None).
        """
        manager = self._manager
        server = manager.server
        original = server_hook(server, "_handle_connect")
        if getattr(original, "_siocluster", False):
            return

        async def handle_connect(eio_sid: str, namespace: str | None, data: Any) -> Any:
            key = (namespace or "/", eio_sid)
            self._auth[key] = data
            try:
                return await original(eio_sid, namespace, data)
            finally:
                if manager.sid_from_eio_sid(eio_sid, key[0]) is None:
                    self._auth.pop(key, None)

        handle_connect._siocluster = True  # type: ignore[attr-defined]
        set_server_hook(server, "_handle_connect", handle_connect)

    def forget_auth(self, nsp: str, eio_sid: str) -> None:
        self._auth.pop((nsp, eio_sid), None)

    async def describe(self, nsp: str, sid: str, eio_sid: str) -> SocketDescription:
        manager = self._manager
        environ: dict[str, Any] = getattr(manager.server, "environ", {}).get(eio_sid, {})
        return describe(sid, manager.get_rooms(sid, nsp), environ,
                        self._auth.get((nsp, eio_sid)), await self._session(nsp, sid))

    async def _session(self, nsp: str, sid: str) -> Any:
        """The socket's session as it can travel between workers (builtins only: no
        pickle on any wire), or None: empty, gone, or holding what cannot travel
        (counted in the adapter's ``errors`` and logged)."""
        try:
            session = await self._manager.server.get_session(sid, namespace=nsp)
        except KeyError:  # disconnected since it was selected
            return None
        if not session:
            return None
        try:
            return msgspec.to_builtins(session, builtin_types=_AS_SENT)
        except (TypeError, ValueError) as exc:
            self.unsendable_sessions += 1
            if self.unsendable_sessions == 1 or self.unsendable_sessions % 1000 == 0:
                log.warning("fetch_sockets: the session of %s cannot go to another worker "
                            "(%s); described without it (%d so far)",
                            sid, exc, self.unsendable_sessions)
            return None
