"""A plain ASGI callable that sends /socket.io/ to a socketio.ASGIApp and answers the rest."""

from __future__ import annotations

import json
import os
from typing import Any

import socketio
from asgi_handlers import make_sio

sio = make_sio()
sio_app = socketio.ASGIApp(sio)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] in ("http", "websocket") and scope["path"].startswith("/socket.io"):
        await sio_app(scope, receive, send)
        return
    if scope["type"] != "http":
        return  # no lifespan: siocluster serves on without it, as uvicorn does
    body = json.dumps({"pid": os.getpid(), "plain": True}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
