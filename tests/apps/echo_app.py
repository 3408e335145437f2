"""The test app: events that reveal which worker answered and what it saw."""

from __future__ import annotations

import gc
import os
from typing import Any

import socketio
from aiohttp import web

sio = socketio.AsyncServer(async_mode="aiohttp")
received: list[Any] = []


@sio.event
async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
    await sio.save_session(sid, {"remote": environ.get("REMOTE_ADDR"),
                                 "proto": environ.get("wsgi.url_scheme"),
                                 "host": environ.get("HTTP_HOST")})


@sio.event
async def whoami(sid: str) -> dict[str, Any]:
    session = await sio.get_session(sid)
    return {"pid": os.getpid(), "sid": sid, **session}


@sio.event
async def echo(sid: str, *args: Any) -> Any:
    return args[0] if len(args) == 1 else list(args)


@sio.event
async def store(sid: str, data: Any) -> None:
    received.append(data)


@sio.event
async def stored(sid: str) -> list[Any]:
    return received


@sio.event
async def shout(sid: str, data: Any) -> None:
    await sio.emit("shout", data)


async def pid(request: web.Request) -> web.Response:
    return web.json_response({"pid": os.getpid(), "remote": request.remote,
                              "host": request.host, "scheme": request.scheme,
                              "gc": [*gc.get_threshold(), gc.get_freeze_count()]})


async def upload(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response({"length": len(body), "pid": os.getpid()})


async def big(request: web.Request) -> web.Response:
    return web.Response(body=b"x" * 1_000_000)


async def chunks(request: web.Request) -> web.StreamResponse:
    """An answer without a Content-Length: chunked on the wire."""
    response = web.StreamResponse()
    await response.prepare(request)
    for i in range(3):
        await response.write(b"part%d;" % i)
    await response.write_eof()
    return response


def make_app() -> web.Application:
    app = web.Application(client_max_size=10_000_000)
    sio.attach(app)
    app.router.add_get("/pid", pid)
    app.router.add_post("/upload", upload)
    app.router.add_get("/big", big)
    app.router.add_get("/chunks", chunks)
    return app


app = make_app()
