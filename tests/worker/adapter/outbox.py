"""A Transport that keeps what it is given (the sending side only), for tests with no sockets."""

from __future__ import annotations

from worker.adapter.envelope import Envelope, parse
from worker.adapter.transport import AdapterState, Owner, TransportEvents
from worker.control import TransportStatus

__all__ = ["Outbox"]


class Outbox:
    """A Transport that keeps what it is given (the sending side only)."""

    name = "outbox"
    node = "0.1"

    def __init__(self, dynamic_rooms: bool = False) -> None:
        self.dynamic_rooms = dynamic_rooms
        self.frames: list[tuple[str | None, bool, Envelope]] = []
        self.rooms: list[tuple[str, Envelope]] = []
        self.figures = TransportStatus(transport_sent=0, transport_errors=0, buffered_bytes=0)

    @property
    def state(self) -> AdapterState:
        return AdapterState.CONNECTED

    async def start(self, events: TransportEvents) -> None:
        return None

    def send(self, frame: bytes, to: str | None, *, bufferable: bool = True) -> None:
        self.frames.append((to, bufferable, parse(frame)))

    def send_room(self, frame: bytes, key: str) -> None:
        self.rooms.append((key, parse(frame)))

    def interest(self, key: str, on: bool) -> None:
        return None

    def owner_of(self, sid: str) -> str | Owner:
        return Owner.ANY

    def status(self) -> TransportStatus:
        return self.figures

    async def close(self) -> None:
        return None
