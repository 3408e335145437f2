"""The recovery test app: a numbered stream to the room "stream", and what a socket knows."""

from __future__ import annotations

import os
from typing import Any

import socketio
from aiohttp import web

from worker.recovery import is_recovered

sio = socketio.AsyncServer(async_mode="aiohttp")
app = web.Application()
sio.attach(app)
connect_calls = 0


@sio.event
async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
    global connect_calls
    connect_calls += 1
    if isinstance(auth, dict) and auth.get("role") == "receiver":
        await sio.enter_room(sid, "stream")
        async with sio.session(sid) as session:
            session["name"] = auth.get("name")
    if isinstance(auth, dict) and auth.get("role") == "flooded":
        await sio.enter_room(sid, "flood")


@sio.event
async def flood(sid: str, count: int, size: int) -> int:
    """``count`` messages of ``size`` bytes to the room "flood" (a slow reader's room)."""
    blob = "x" * size
    for _ in range(count):
        await sio.emit("blob", blob, to="flood")
    return count


@sio.event
async def publish(sid: str, n: int) -> int:
    """The sender's numbered message; the ack says it was handed to the cluster."""
    await sio.emit("tick", n, to="stream")
    return n


@sio.event
async def whoami(sid: str) -> dict[str, Any]:
    session = await sio.get_session(sid)
    return {"pid": os.getpid(), "sid": sid, "name": session.get("name"),
            "rooms": sorted(str(r) for r in sio.rooms(sid)),
            "recovered": is_recovered(sio, sid), "connect_calls": connect_calls}
