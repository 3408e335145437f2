"""The test app for emits from outside: clients join the rooms named in their auth."""

from __future__ import annotations

import os
from typing import Any

import socketio
from aiohttp import web

sio = socketio.AsyncServer(async_mode="aiohttp", namespaces="*")


@sio.on("connect", namespace="*")
async def connect(namespace: str, sid: str, environ: Any, auth: Any = None) -> None:
    for room in (auth or {}).get("rooms", []):
        await sio.enter_room(sid, room, namespace=namespace)


@sio.on("whoami", namespace="*")
async def whoami(namespace: str, sid: str) -> dict[str, Any]:
    return {"pid": os.getpid(), "sid": sid}


@sio.on("shout", namespace="*")
async def shout(namespace: str, sid: str, data: Any) -> None:
    await sio.emit("shout", data, namespace=namespace)


app = web.Application()
sio.attach(app)
