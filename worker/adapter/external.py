"""Messages from outside the cluster: python-socketio's write-only managers.

Theory of operation
-------------------

python-socketio documents one way to emit from another process: a client
manager created with ``write_only=True`` (``AsyncRedisManager``,
``RedisManager``, ``KombuManager``, ``AsyncAioPikaManager`` ...).  Its
``emit`` publishes one JSON object on the pub/sub channel (``socketio`` by
default; see ``AsyncPubSubManager.emit`` in python-socketio)::

    {"method": "emit", "event": "...", "data": [arg, ...], "binary": false,
     "namespace": "/", "room": null | room | [rooms], "skip_sid": null | sid | [sids],
     "callback": null, "host_id": "..."}

Binary arguments travel as ``binary: true`` with ``data = [packet-with-
placeholders, base64 attachment, ...]``.  The same channel also carries
``disconnect``, ``enter_room``, ``leave_room``, ``close_room`` (selected by a
sid or room) and ``callback`` (an ack going back to a python-socketio server;
meaningless here, ignored).

Releases of python-socketio before 5.0 pickled these messages.  Unpickling
data from a broker runs arbitrary code, so such a message is *refused*: it is
recognised by its first byte (pickle protocol 2 and later start with 0x80) and
counted, and its bytes are never handed to :mod:`pickle`.

:func:`parse_message` is pure: bytes in, one :data:`ExternalOp` or a
:class:`Refused` out.  The manager applies an op to the sockets *of its own
worker only* (the caller decides which worker sees which message: every
worker for a pub/sub channel, exactly one for a competing-consumer queue that
then broadcasts it through the adapter).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from collections.abc import Callable
from typing import Any

from socketio.packet import Packet

__all__ = [
    "ExternalClose",
    "ExternalEmit",
    "ExternalOp",
    "ExternalRooms",
    "Refused",
    "parse_message",
]

Room = str | int
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class ExternalEmit:
    event: str
    args: tuple[Any, ...]  # the emit's arguments, as the client will get them
    namespace: str
    rooms: tuple[Room, ...]  # empty: the whole namespace
    exclude: tuple[Room, ...]  # skip_sid, as except-rooms


@dataclasses.dataclass(frozen=True, slots=True)
class ExternalRooms:
    """enter_room / leave_room of one sid, or disconnect of one sid."""

    method: str  # "enter_room", "leave_room" or "disconnect"
    sid: str
    namespace: str
    room: Room | None


@dataclasses.dataclass(frozen=True, slots=True)
class ExternalClose:
    room: Room
    namespace: str


@dataclasses.dataclass(frozen=True, slots=True)
class Refused:
    reason: str  # "pickle", "malformed", "unsupported"; amqp: "expired" (the queue's TTL)
    detail: str


ExternalOp = ExternalEmit | ExternalRooms | ExternalClose


def _looks_like_pickle(raw: bytes) -> bool:
    # Protocol >= 2 opens with PROTO (0x80); protocols 0/1 end with STOP (".")
    # after an opcode JSON never starts with.
    return raw[:1] == b"\x80" or (raw[-1:] == b"." and raw[:1] in (b"(", b"}", b"]", b"c"))


def _rooms(value: Any, what: str) -> tuple[Room, ...]:
    if value is None:
        return ()
    if isinstance(value, str | int) and not isinstance(value, bool):
        return (value,)
    if isinstance(value, list):
        out: list[Room] = []
        for item in value:
            if not isinstance(item, str | int) or isinstance(item, bool):
                raise ValueError(f"{what} holds a {type(item).__name__}")
            out.append(item)
        return tuple(out)
    raise ValueError(f"{what} is a {type(value).__name__}")


def _namespace(message: dict[str, Any]) -> str:
    nsp = message.get("namespace") or "/"
    if not isinstance(nsp, str) or not nsp.startswith("/"):
        raise ValueError("namespace must be a string starting with '/'")
    return nsp


def _emit(message: dict[str, Any]) -> ExternalEmit:
    event = message.get("event")
    if not isinstance(event, str) or not event:
        raise ValueError("event must be a non-empty string")
    data = message.get("data")
    if not isinstance(data, list):
        raise ValueError("data must be a list of arguments")
    if message.get("binary"):
        if not data or not all(isinstance(a, str) for a in data[1:]):
            raise ValueError("binary data must be [packet, base64 attachments...]")
        try:
            attachments = [base64.b64decode(a, validate=True) for a in data[1:]]
        except binascii.Error:
            raise ValueError("binary attachment is not base64") from None
        try:
            data = Packet.reconstruct_binary(data[0], attachments)
        except (IndexError, KeyError, TypeError):
            raise ValueError("binary placeholders do not match the attachments") from None
        if not isinstance(data, list):
            raise ValueError("binary data does not rebuild to a list")
    if data == [None]:
        # emit(event) and emit(event, None) both publish [null]; python-socketio's
        # receiving side sends that as no argument at all, and so do we.
        data = []
    room = message.get("room")
    if room is None:
        room = message.get("to")
    return ExternalEmit(
        event=event,
        args=tuple(data),
        namespace=_namespace(message),
        rooms=_rooms(room, "room"),
        exclude=_rooms(message.get("skip_sid"), "skip_sid"),
    )


def parse_message(raw: bytes | str) -> ExternalOp | Refused | None:
    """One message from the channel; None for a message meant for someone else."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogateescape")
    if len(raw) > MAX_MESSAGE_BYTES:
        return Refused("malformed", f"message of {len(raw)} bytes is too large")
    if _looks_like_pickle(raw):
        return Refused("pickle", "pickled message (python-socketio < 5); refused, not unpickled")
    try:
        message = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return Refused("malformed", f"not JSON: {exc}")
    if not isinstance(message, dict) or not isinstance(message.get("method"), str):
        return Refused("malformed", "not an object with a 'method'")
    method = message["method"]
    parse = _PARSERS.get(method)
    if parse is None:
        return Refused("unsupported", f"unknown method {method!r}")
    try:
        return parse(method, message)
    except ValueError as exc:
        return Refused("malformed", f"{method}: {exc}")


def _one_room(message: dict[str, Any]) -> Room:
    rooms = _rooms(message.get("room"), "room")
    if len(rooms) != 1:
        raise ValueError("room must be one room")
    return rooms[0]


def _parse_rooms(method: str, message: dict[str, Any]) -> ExternalOp:
    sid = message.get("sid")
    if not isinstance(sid, str):
        raise ValueError("sid must be a string")
    room = None if method == "disconnect" else _one_room(message)
    return ExternalRooms(method, sid, _namespace(message), room)


def _parse_close(_method: str, message: dict[str, Any]) -> ExternalOp:
    return ExternalClose(_one_room(message), _namespace(message))


def _parse_callback(_method: str, _message: dict[str, Any]) -> None:
    return None  # an ack for a python-socketio server's emit


_PARSERS: dict[str, Callable[[str, dict[str, Any]], ExternalOp | None]] = {
    "emit": lambda _method, message: _emit(message),
    "enter_room": _parse_rooms,
    "leave_room": _parse_rooms,
    "disconnect": _parse_rooms,
    "close_room": _parse_close,
    "callback": _parse_callback,
}
