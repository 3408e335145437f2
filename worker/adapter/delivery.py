"""Where a selector must go besides this worker: the delivery plan.  Pure.

An emit, a join, a leave or a disconnect names its targets as rooms (a sid
is a room too: every socket is in a room named after its sid).  This worker
applies it to its own sockets itself; :func:`plan_delivery` decides which
other workers must hear of it:

* no targets: everyone (one broadcast frame);
* a room this worker holds locally as a sid: nobody else;
* a sid that names its owner (``balancer.sid``'s format): that worker only,
  one frame per owner, carrying only its rooms; a sid whose owner is gone is
  counted as undeliverable, not sent;
* any other room: everyone, and then the sids ride along in the same frame,
  since every worker hears it anyway.

With dynamic room channels (the ``redis`` backend when several hosts form one
cluster, as socket.io's redis adapter's ``subscriptionMode: "dynamic"``), an
emit to exactly one room that is not a sid goes out on that room's own channel
(:func:`room_channel`), which only the workers holding the room subscribe to;
so a host does not even receive, let alone decode, what is meant for rooms it
does not hold.  Everything else still goes out on the common channel.
:func:`frame_channel` applies that rule to a frame, the same on both ends.

The rest is the selector's arithmetic on this worker's own rooms
(python-socketio's ``rooms[namespace][room] -> {sid: eio_sid}``):
:func:`select` picks the sockets in any target room and in no except-room,
:func:`holds_any` tells whether a frame's body is worth decoding here, and
:func:`as_rooms` / :func:`as_args` read python-socketio's loose arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .envelope import MsgType
from .transport import Owner

__all__ = [
    "Delivery",
    "Room",
    "anyone",
    "as_args",
    "as_rooms",
    "frame_channel",
    "holds_any",
    "looks_like_sid",
    "plan_delivery",
    "room_channel",
    "select",
]

Room = str | int

_SID_RANDOM_CHARS = 20  # balancer.sid.mint_sid: token_urlsafe(15)


def looks_like_sid(room: Room) -> bool:
    if not isinstance(room, str):
        return False
    parts = room.split(".", 2)
    return len(parts) == 3 and len(parts[2]) == _SID_RANDOM_CHARS


def room_channel(nsp: str, rooms: tuple[Room, ...]) -> str | None:
    """The dynamic channel key for an emit to ``rooms``; None for the common channel.

    The key holds the room's type (``"s"`` or ``"i"``), so room ``5`` and room
    ``"5"``, which python-socketio keeps apart, get different channels.
    """
    if len(rooms) != 1:
        return None
    room = rooms[0]
    if isinstance(room, str):
        return None if looks_like_sid(room) else f"r#{nsp}#s{room}"
    return f"r#{nsp}#i{room}"


@dataclass(frozen=True, slots=True)
class Delivery:
    node: str | None  # None: every other worker
    rooms: tuple[Room, ...]


def plan_delivery(
    targets: tuple[Room, ...],
    local_sids: Container[Room],
    owner_of: Callable[[str], str | Owner],
) -> tuple[list[Delivery], int]:
    """The frames to send, and how many targets belong to a worker that is gone."""
    if not targets:
        return [Delivery(None, ())], 0
    by_node: dict[str, list[Room]] = {}
    broadcast: list[Room] = []
    gone = 0
    for room in targets:
        if room in local_sids:
            continue
        owner = owner_of(room) if isinstance(room, str) and looks_like_sid(room) else Owner.ANY
        if owner is Owner.GONE:
            gone += 1
        elif owner is Owner.ANY:
            broadcast.append(room)
        else:
            by_node.setdefault(owner, []).append(room)
    if broadcast:
        rooms = broadcast + [r for node_rooms in by_node.values() for r in node_rooms]
        return [Delivery(None, tuple(rooms))], gone
    return [Delivery(node, tuple(rooms)) for node, rooms in by_node.items()], gone


def anyone(sid: str) -> str | Owner:
    """An ``owner_of`` for which no sid names its owner (with recovery, a sid may move)."""
    return Owner.ANY


def frame_channel(
    dynamic_rooms: bool, kind: int, nsp: str, to: str | None, rooms: tuple[Room, ...]
) -> str | None:
    """The room channel a frame travels on, if any; the same rule on both ends."""
    if not dynamic_rooms or kind != MsgType.BROADCAST or to is not None:
        return None
    return room_channel(nsp, rooms)


def as_rooms(value: Any) -> tuple[Room, ...]:
    """python-socketio's ``room``/``skip_sid``: None, one room, or several."""
    if value is None:
        return ()
    if isinstance(value, str | int):
        return (value,)
    return tuple(v for v in value if v is not None)


def as_args(data: Any) -> list[Any]:
    """python-socketio's rule: a tuple is several arguments, anything else one."""
    if isinstance(data, tuple):
        return list(data)
    if data is None:
        return []
    return [data]


NamespaceRooms = Mapping[Room | None, Mapping[str, str]]  # room -> {sid: eio_sid}


def holds_any(ns: NamespaceRooms | None, rooms: tuple[Room, ...]) -> bool:
    """Whether this worker holds any of ``rooms`` (none: the whole namespace) in ``ns``."""
    if not ns:
        return False
    return not rooms or any(room in ns for room in rooms)


def select(
    ns: NamespaceRooms | None, targets: Iterable[Room], exclude: Iterable[Room]
) -> dict[str, str]:
    """The (sid -> eio_sid) in any of ``targets`` (none: all) and none of ``exclude``."""
    if not ns:
        return {}
    wanted: list[Room | None] = list(targets) or [None]
    pool: dict[str, str] = {}
    for room in wanted:
        if room in ns:
            pool.update(ns[room].items())
    for room in exclude:
        if room in ns:
            for sid in ns[room]:
                pool.pop(sid, None)
    return pool
