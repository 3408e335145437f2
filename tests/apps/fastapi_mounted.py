"""FastAPI with the Socket.IO app mounted under /ws; plus a factory building the same."""

from __future__ import annotations

import os
from typing import Any

import socketio
from asgi_handlers import lifespan_marker, make_sio
from fastapi import FastAPI


def create_app(name: str = "mounted") -> FastAPI:
    sio = make_sio()
    api = FastAPI(on_startup=[lambda: lifespan_marker("start")],
                  on_shutdown=[lambda: lifespan_marker("stop")])

    @api.get("/api/pid")
    async def pid() -> dict[str, Any]:
        return {"pid": os.getpid(), "name": name}

    # Starlette passes a mounted app the full path: socketio_path includes the mount.
    api.mount("/ws", socketio.ASGIApp(sio, socketio_path="ws/socket.io"))
    return api


app = create_app()


def build(*args: Any, **kwargs: Any) -> FastAPI:
    """A factory as a decorator leaves it: ``(*args, **kwargs)`` could be either, so
    siocluster asks for --factory, as uvicorn would."""
    return create_app("built")
