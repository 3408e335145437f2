"""What the manager needs from a backend, and the adapter's state enum.

A transport moves opaque frames between this worker (``node``) and its peers.
It never blocks the caller: :meth:`Transport.send` queues or writes and
returns; whatever cannot be delivered is counted, never raised.  It reports
what it learns through :class:`TransportEvents`: frames (awaited in arrival
order, so one peer's frames are handled in the order they were sent), peers
appearing and disappearing, and its own state.
"""

from __future__ import annotations

import enum
from typing import Protocol

from ..control import TransportStatus

__all__ = ["AdapterState", "Owner", "Transport", "TransportEvents"]


class AdapterState(enum.IntEnum):
    CONNECTING = 0
    CONNECTED = 1  # subscribed; cross-worker messages flow
    DEGRADED = 2  # broker unreachable: local clients served, cross-worker buffered
    CLOSED = 3


class Owner(enum.Enum):
    ANY = "any"  # the transport cannot tell: address every peer
    GONE = "gone"  # the owner is known to be dead


class TransportEvents(Protocol):
    async def frame_received(self, frame: bytes) -> None: ...

    def peer_up(self, node: str) -> None: ...

    def peer_down(self, node: str) -> None: ...

    def state_changed(self, state: AdapterState) -> None: ...


class Transport(Protocol):
    name: str
    node: str
    # Whether emits to one room go out on that room's own channel, which only
    # the workers holding the room listen to (see :mod:`.delivery`).
    dynamic_rooms: bool

    @property
    def state(self) -> AdapterState: ...

    async def start(self, events: TransportEvents) -> None: ...

    def send(self, frame: bytes, to: str | None, *, bufferable: bool = True) -> None: ...

    def send_room(self, frame: bytes, key: str) -> None:
        """Send on the room channel ``key`` (only when ``dynamic_rooms``)."""
        ...

    def interest(self, key: str, on: bool) -> None:
        """This worker now holds (or no longer holds) the room of channel ``key``."""
        ...

    def owner_of(self, sid: str) -> str | Owner: ...

    def status(self) -> TransportStatus: ...

    async def close(self) -> None: ...
