"""echo_app, plus a ``join`` event: sockets in rooms, for the Admin UI and dashboard tests."""

from __future__ import annotations

from echo_app import app, sio

__all__ = ["app", "sio"]


@sio.event
async def join(sid: str, room: str) -> str:
    await sio.enter_room(sid, room)
    return room
