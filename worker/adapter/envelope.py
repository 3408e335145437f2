"""The adapter's wire format: one versioned envelope, no pickle.

Theory of operation
-------------------

Every message between workers is an :class:`Envelope`: ``{v, type, node, nsp,
data}`` plus the routing fields a receiver needs to decide whether the message
concerns it at all (``rooms``, ``exclude``, ``to``, ``seq``, ``rid``).  On the
wire an envelope is a *frame*::

    +---------+-------+----------------+------------------+----------------+
    | v (u8)  | codec | header length  | header           | body (data)    |
    |         | (u8)  | (u32, big end.)| (routing fields) | (lazy)         |
    +---------+-------+----------------+------------------+----------------+

The header is small and decoded first (:func:`parse_header`); the body, which
holds the event arguments, is decoded only by :meth:`ParsedFrame.data`, so a
worker that holds none of the target rooms drops a broadcast without paying
for its payload.

``codec`` is ``m`` (msgpack) or ``j`` (JSON), both through msgspec.  Frames are
self-describing, so workers configured with different codecs interoperate.
Binary payloads survive both: msgpack carries ``bytes`` natively; the JSON body
replaces each ``bytes`` value with ``{"_placeholder": true, "num": i}`` and
ships the base64 attachments alongside, as Socket.IO itself does.

Like websockets' ``frames.py`` this module is pure: :func:`serialize`,
:func:`parse_header` / :func:`parse` and :func:`check` take and return values,
and raise :class:`~.exceptions.ProtocolError` for bad input from peers or
:class:`~.exceptions.EncodingError` for data that cannot be encoded.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
from typing import Any

import msgspec

from .exceptions import EncodingError, ProtocolError, UnsupportedVersion

__all__ = [
    "PREFIX_BYTES",
    "VERSION",
    "Codec",
    "Envelope",
    "Header",
    "MsgType",
    "ParsedFrame",
    "check",
    "parse",
    "parse_header",
    "serialize",
]

VERSION = 1
PREFIX_BYTES = 6  # version, codec, u32 header length

Room = str | int


class MsgType(enum.IntEnum):
    HELLO = 0  # local transport: names the node at the other end of a stream
    HEARTBEAT = 1  # "I am alive"; unsequenced
    BYE = 2  # graceful leave: forget me now, do not wait for a timeout
    BROADCAST = 3  # emit to rooms minus exclude; data = [event, args, ack_id|None]
    JOIN = 4  # sockets selected by rooms/exclude join data (a list of rooms)
    LEAVE = 5  # sockets selected by rooms/exclude leave data (a list of rooms)
    DISCONNECT = 6  # sockets selected by rooms/exclude are disconnected
    ACK = 7  # a client's ack, back to the emitting node; data = [ack_id, args]
    FETCH_REQ = 8  # fetch_sockets request; rid set
    FETCH_RESP = 9  # list of socket descriptions; to + rid set
    SSE = 10  # server-side emit; data = [event, args]; rid > 0 when acks wanted
    SSE_RESP = 11  # data = [handled, value]; to + rid set


class Codec(enum.Enum):
    MSGPACK = ord("m")
    JSON = ord("j")


# Directed messages answer one node; requests expect answers.
_DIRECTED = frozenset({MsgType.ACK, MsgType.FETCH_RESP, MsgType.SSE_RESP})
_REQUESTS = frozenset({MsgType.FETCH_REQ, MsgType.FETCH_RESP, MsgType.SSE_RESP})


class Header(msgspec.Struct, frozen=True, array_like=True):
    """Routing fields, decoded before (and often instead of) the body."""

    type: int
    node: str
    nsp: str = "/"
    seq: int = 0
    to: str | None = None
    rooms: tuple[Room, ...] = ()
    exclude: tuple[Room, ...] = ()
    rid: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Envelope:
    type: MsgType
    node: str
    nsp: str = "/"
    data: Any = None
    # Routing
    seq: int = 0  # per (sender, destination) sequence; 0 means unsequenced
    to: str | None = None  # the one node this is for; None means every peer
    rooms: tuple[Room, ...] = ()  # target rooms; empty means the whole namespace
    exclude: tuple[Room, ...] = ()  # except these rooms (sids are rooms too)
    rid: int = 0  # request id, unique per sender
    v: int = VERSION

    def header(self) -> Header:
        return Header(
            int(self.type), self.node, self.nsp, self.seq, self.to,
            self.rooms, self.exclude, self.rid,
        )


_msgpack_encoder = msgspec.msgpack.Encoder()
_json_encoder = msgspec.json.Encoder()
_header_msgpack = msgspec.msgpack.Decoder(Header)
_header_json = msgspec.json.Decoder(Header)


def _strip_binary(value: Any, attachments: list[str]) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        attachments.append(base64.b64encode(bytes(value)).decode("ascii"))
        return {"_placeholder": True, "num": len(attachments) - 1}
    if isinstance(value, list | tuple):
        return [_strip_binary(v, attachments) for v in value]
    if isinstance(value, dict):
        return {k: _strip_binary(v, attachments) for k, v in value.items()}
    return value


def _restore_binary(value: Any, attachments: list[bytes]) -> Any:
    if isinstance(value, list):
        return [_restore_binary(v, attachments) for v in value]
    if isinstance(value, dict):
        if value.get("_placeholder") is True and len(value) == 2:
            num = value.get("num")
            if not isinstance(num, int) or not 0 <= num < len(attachments):
                raise ProtocolError(f"bad binary placeholder {num!r}")
            return attachments[num]
        return {k: _restore_binary(v, attachments) for k, v in value.items()}
    return value


def _encode_body(data: Any, codec: Codec) -> bytes:
    if codec is Codec.MSGPACK:
        return _msgpack_encoder.encode(data)
    attachments: list[str] = []
    stripped = _strip_binary(data, attachments)
    return _json_encoder.encode([stripped, attachments])


def _decode_body(body: bytes | memoryview, codec: Codec) -> Any:
    try:
        if codec is Codec.MSGPACK:
            return msgspec.msgpack.decode(body)
        pair = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"cannot decode body: {exc}") from None
    if not isinstance(pair, list) or len(pair) != 2 or not isinstance(pair[1], list):
        raise ProtocolError("json body is not [data, attachments]")
    try:
        attachments = [base64.b64decode(a, validate=True) for a in pair[1]]
    except (TypeError, ValueError):
        raise ProtocolError("json body has a bad attachment") from None
    return _restore_binary(pair[0], attachments)


def check(envelope: Envelope) -> None:
    """Raise :class:`ProtocolError` unless ``envelope`` is internally consistent."""
    if envelope.v != VERSION:
        raise UnsupportedVersion(f"envelope version {envelope.v} is not supported")
    if not envelope.node:
        raise ProtocolError("envelope has no node")
    if not envelope.nsp.startswith("/"):
        raise ProtocolError(f"namespace {envelope.nsp!r} does not start with '/'")
    if envelope.seq < 0 or envelope.rid < 0:
        raise ProtocolError("negative seq or rid")
    if envelope.type in _DIRECTED and not envelope.to:
        raise ProtocolError(f"{envelope.type.name} must name its destination")
    if envelope.type in _REQUESTS and envelope.rid == 0:
        raise ProtocolError(f"{envelope.type.name} must carry a request id")


def serialize(envelope: Envelope, codec: Codec = Codec.MSGPACK) -> bytes:
    """Encode ``envelope`` into one frame."""
    check(envelope)
    try:
        if codec is Codec.MSGPACK:
            header = _msgpack_encoder.encode(envelope.header())
        else:
            header = _json_encoder.encode(envelope.header())
        body = _encode_body(envelope.data, codec)
    except (TypeError, ValueError, OverflowError) as exc:
        raise EncodingError(f"cannot encode {envelope.type.name} data: {exc}") from None
    prefix = bytes((envelope.v, codec.value)) + len(header).to_bytes(4, "big")
    return b"".join((prefix, header, body))


@dataclasses.dataclass(frozen=True, slots=True)
class ParsedFrame:
    """A frame whose header is decoded and whose body is not (yet)."""

    header: Header
    codec: Codec
    body: memoryview

    @property
    def type(self) -> MsgType:
        return MsgType(self.header.type)

    def data(self) -> Any:
        return _decode_body(self.body, self.codec)

    def envelope(self) -> Envelope:
        h = self.header
        return Envelope(
            MsgType(h.type), h.node, h.nsp, self.data(), seq=h.seq, to=h.to,
            rooms=h.rooms, exclude=h.exclude, rid=h.rid,
        )


def parse_header(frame: bytes | memoryview, *, max_size: int | None = None) -> ParsedFrame:
    """Decode the prefix and header of ``frame``; leave the body for later."""
    view = memoryview(frame)
    if len(view) < PREFIX_BYTES:
        raise ProtocolError(f"frame of {len(view)} bytes is shorter than its prefix")
    if max_size is not None and len(view) > max_size:
        raise ProtocolError(f"frame of {len(view)} bytes exceeds the limit of {max_size}")
    if view[0] != VERSION:
        raise UnsupportedVersion(f"envelope version {view[0]} is not supported")
    try:
        codec = Codec(view[1])
    except ValueError:
        raise ProtocolError(f"unknown codec {view[1]:#x}") from None
    header_len = int.from_bytes(view[2:PREFIX_BYTES], "big")
    end = PREFIX_BYTES + header_len
    if end > len(view):
        raise ProtocolError("header length runs past the end of the frame")
    decoder = _header_msgpack if codec is Codec.MSGPACK else _header_json
    try:
        header = decoder.decode(view[PREFIX_BYTES:end])
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"cannot decode header: {exc}") from None
    try:
        msg_type = MsgType(header.type)
    except ValueError:
        raise ProtocolError(f"unknown message type {header.type}") from None
    if not header.node:
        raise ProtocolError("envelope has no node")
    if msg_type in _DIRECTED and not header.to:
        raise ProtocolError(f"{msg_type.name} must name its destination")
    return ParsedFrame(header, codec, view[end:])


def parse(frame: bytes | memoryview, *, max_size: int | None = None) -> Envelope:
    """Decode a whole frame and check it."""
    envelope = parse_header(frame, max_size=max_size).envelope()
    check(envelope)
    return envelope
