"""The classic Socket.IO chat, served by siocluster.

    siocluster run chat:app --workers 2 --port 8000     (from this directory)
"""

from __future__ import annotations

import os
from pathlib import Path

import socketio
from aiohttp import web

HERE = Path(__file__).parent
sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins=[])


@sio.event
async def connect(sid: str, environ: dict[str, object], auth: object = None) -> None:
    await sio.emit("system", f"someone joined (worker pid {os.getpid()})", skip_sid=sid)


@sio.on("chat message")
async def chat_message(sid: str, msg: str) -> None:
    await sio.emit("chat message", msg)


@sio.event
async def whoami(sid: str) -> dict[str, object]:
    return {"pid": os.getpid(), "sid": sid}


async def index(_request: web.Request) -> web.FileResponse:
    return web.FileResponse(HERE / "static" / "index.html")


VENDOR = HERE / "node_modules" / "socket.io-client" / "dist"


async def vendor(request: web.Request) -> web.StreamResponse:
    """The official browser client, from the npm package installed by setup.sh."""
    path = (VENDOR / request.match_info["name"]).resolve()
    if VENDOR.resolve() not in path.parents or not path.is_file():
        raise web.HTTPNotFound(text="socket.io-client is not installed: run examples/chat/setup.sh")
    return web.FileResponse(path)


app = web.Application()
sio.attach(app)
app.router.add_get("/", index)
app.router.add_get("/vendor/{name}", vendor)
