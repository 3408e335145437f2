"""FastAPI wrapped by socketio.ASGIApp (other_asgi_app=), as python-socketio's docs show."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import socketio
from asgi_handlers import lifespan_marker, make_sio
from fastapi import FastAPI, Request, WebSocket
from fastapi.staticfiles import StaticFiles

sio = make_sio()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    lifespan_marker("start")
    yield
    lifespan_marker("stop")


api = FastAPI(lifespan=lifespan)
api.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")


@api.get("/pid")
async def pid(request: Request) -> dict[str, Any]:
    client = request.client
    return {"pid": os.getpid(), "remote": client.host if client else None,
            "scheme": request.url.scheme, "host": request.headers.get("host")}


@api.post("/upload")
async def upload(request: Request) -> dict[str, Any]:
    return {"length": len(await request.body()), "pid": os.getpid()}


@api.websocket("/api/ws")
async def ws_echo(websocket: WebSocket) -> None:
    await websocket.accept()
    client = websocket.client
    while True:
        text = await websocket.receive_text()
        if text == "bye":
            break
        await websocket.send_json({"echo": text, "pid": os.getpid(),
                                   "remote": client.host if client else None})
    await websocket.close()


app = socketio.ASGIApp(sio, other_asgi_app=api)
