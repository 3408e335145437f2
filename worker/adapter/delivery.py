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
"""

from __future__ import annotations

from collections.abc import Callable, Container
from dataclasses import dataclass

from .transport import Owner

__all__ = ["Delivery", "Room", "looks_like_sid", "plan_delivery", "room_channel"]

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
