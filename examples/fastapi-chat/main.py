"""The classic Socket.IO chat as a FastAPI app, served by siocluster.

    ./run.sh                                            (installs what's missing, 2 workers, :8000)
    siocluster run main:app --workers 2 --port 8000     (from this directory, after ./setup.sh)

The shape python-socketio's docs give for FastAPI: the Socket.IO server is an
``AsyncServer(async_mode="asgi")`` wrapped in a ``socketio.ASGIApp`` mounted
under ``/ws``.  Starlette passes a mounted app the full path, so its
``socketio_path`` includes the mount: clients connect with
``path: "/ws/socket.io/"``, and siocluster reads that path from the app to
route every request by its session id.

One REST endpoint, ``POST /api/announce``, broadcasts a system line to every
tab: the request lands on any worker, and ``sio.emit`` reaches the tabs on
all of them through siocluster's cross-worker adapter.  The browser client is
the official one from npm, served from ``node_modules`` rather than a CDN.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import socketio
from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

__all__ = ["api", "app", "sio"]

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
VENDOR = HERE / "node_modules" / "socket.io-client" / "dist"

# The default CORS policy: only pages from this same origin may connect.
sio = socketio.AsyncServer(async_mode="asgi")


@sio.event
async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
    await sio.emit("system", f"someone joined (worker pid {os.getpid()})", skip_sid=sid)


@sio.event
async def disconnect(sid: str, *_reason: Any) -> None:
    await sio.emit("system", f"someone left (worker pid {os.getpid()})")


@sio.on("chat message")
async def chat_message(sid: str, msg: Any) -> None:
    if isinstance(msg, str) and msg.strip():
        await sio.emit("chat message", msg[:1000])


@sio.event
async def whoami(sid: str) -> dict[str, Any]:
    return {"pid": os.getpid(), "sid": sid}


class Announcement(BaseModel):
    text: str = Field(min_length=1, max_length=200)


api = FastAPI(title="siocluster FastAPI chat")


@api.post("/api/announce")
async def announce(announcement: Announcement) -> dict[str, Any]:
    """Say something to every tab, on every worker."""
    await sio.emit("system", f"announcement: {announcement.text}")
    return {"sent": True, "pid": os.getpid()}


@api.get("/")
async def index() -> FileResponse:
    return FileResponse(STATIC / "index.html")


@api.get("/vendor/{name}")
async def vendor(name: str) -> FileResponse:
    """The official browser client, from the npm package that setup.sh installs."""
    if not VENDOR.is_dir():
        raise HTTPException(404, "socket.io-client is not installed: run setup.sh")
    path = (VENDOR / name).resolve()
    if path.parent != VENDOR.resolve() or not path.is_file():
        raise HTTPException(404)
    return FileResponse(path)


api.mount("/ws", socketio.ASGIApp(sio, socketio_path="ws/socket.io"))
app = api
