"""A bare Starlette app with the Socket.IO app mounted under /rt."""

from __future__ import annotations

import os

import socketio
from asgi_handlers import make_sio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

sio = make_sio()


async def pid(request: Request) -> JSONResponse:
    return JSONResponse({"pid": os.getpid()})


app = Starlette(routes=[
    Route("/pid", pid),
    Mount("/rt", app=socketio.ASGIApp(sio, socketio_path="rt/socket.io")),
])
