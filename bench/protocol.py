"""Engine.IO v4 / Socket.IO v5 text packets, built and parsed with no I/O.

Only what the load generator needs, on the default namespace ``/``:

* Engine.IO packet types are one digit: ``0`` open (JSON with the sid),
  ``1`` close, ``2`` ping, ``3`` pong, ``4`` message, ``5`` upgrade, ``6`` noop.
  A polling payload joins packets with ``\\x1e``.
* A Socket.IO packet rides in an Engine.IO message: ``40`` connect (the server
  answers ``40{"sid":...}``), ``42[name, *args]`` an event, ``42<id>[...]`` an
  event that wants an ack, answered by ``43<id>[result]``.

The server pings (``2``) every pingInterval; a client that does not answer
``3`` within pingTimeout is dropped, so every client loop calls
:func:`is_ping` on what it reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CONNECT",
    "NOOP",
    "PING",
    "PONG",
    "PROBE_PING",
    "PROBE_PONG",
    "SEPARATOR",
    "UPGRADE",
    "Ack",
    "Event",
    "ack_event",
    "event",
    "is_ping",
    "parse_open",
    "parse_sio",
    "query",
    "split_payload",
]

PING = "2"
PONG = "3"
UPGRADE = "5"
NOOP = "6"
PROBE_PING = "2probe"
PROBE_PONG = "3probe"
CONNECT = "40"
SEPARATOR = "\x1e"

_COMPACT = (",", ":")


def query(transport: str, sid: str | None = None) -> str:
    """The query string of an Engine.IO v4 request."""
    q = f"EIO=4&transport={transport}"
    return f"{q}&sid={sid}" if sid else q


def parse_open(packet: str) -> dict[str, Any]:
    """``0{...}`` -> the open document (``sid``, ``pingInterval``...)."""
    if not packet.startswith("0"):
        raise ValueError(f"expected an open packet, got {packet[:40]!r}")
    doc: dict[str, Any] = json.loads(packet[1:])
    return doc


def split_payload(body: str) -> list[str]:
    return body.split(SEPARATOR) if body else []


def is_ping(packet: str) -> bool:
    return packet == PING


def event(name: str, *args: Any) -> str:
    return "42" + json.dumps([name, *args], separators=_COMPACT)


def ack_event(ack_id: int, name: str, *args: Any) -> str:
    return f"42{ack_id}" + json.dumps([name, *args], separators=_COMPACT)


@dataclass(frozen=True, slots=True)
class Event:
    name: str
    args: list[Any]


@dataclass(frozen=True, slots=True)
class Ack:
    ack_id: int
    args: list[Any]


def parse_sio(packet: str) -> Event | Ack | str | None:
    """An Engine.IO message carrying Socket.IO.

    Returns an :class:`Event`, an :class:`Ack`, the raw packet for other
    Socket.IO types (``40...`` connect, ``41`` disconnect, ``44`` error), or
    ``None`` for anything that is not an Engine.IO message.
    """
    if len(packet) < 2 or packet[0] != "4":
        return None
    kind = packet[1]
    if kind not in "23":
        return packet
    i = 2
    while i < len(packet) and packet[i].isdigit():
        i += 1
    data = json.loads(packet[i:]) if i < len(packet) else []
    if kind == "3":
        return Ack(int(packet[2:i]), data)
    if not data:
        raise ValueError(f"event packet with no name: {packet[:40]!r}")
    return Event(data[0], data[1:])
