"""The classic Socket.IO chat, served by siocluster.

    ./run.sh                                            (installs what's missing, 2 workers, :8000)
    siocluster run chat:app --workers 2 --port 8000     (from this directory, after ./setup.sh)

Every worker runs this module. A broadcast with ``sio.emit`` reaches the tabs on every worker
because siocluster installs its cross-worker adapter; the page asks ``whoami`` to show which
worker pid served it. The browser client is the official one from npm, served from
``node_modules`` rather than a CDN so the example works offline once set up.

``announce_connections`` is a cluster singleton: a background task started here with
``sio.start_background_task`` would run in every worker, and every tab would get the count once
per worker.  ``@singleton`` runs it on one worker of the cluster, and on another one if that
worker dies or is restarted.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import socketio
from aiohttp import web

from worker.adapter import RequestTimeout
from worker.singleton import singleton

__all__ = ["app", "sio"]

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
VENDOR = HERE / "node_modules" / "socket.io-client" / "dist"

# The default CORS policy: only pages from this same origin may connect.
sio = socketio.AsyncServer(async_mode="aiohttp")
# How often the cluster's connection count is announced to every tab.
CONNECTIONS_EVERY_S = float(os.environ.get("CHAT_CONNECTIONS_EVERY_S", "5"))


@singleton("chat-connections")
async def announce_connections() -> None:
    """Every few seconds, tell every tab how many are connected across the whole cluster."""
    while True:
        if not hasattr(sio.manager, "fetch_sockets"):  # --adapter none: this worker alone
            count, workers = len(sio.eio.sockets), 1
        else:
            try:
                count = len(await sio.manager.fetch_sockets())
            except RequestTimeout as exc:  # a worker did not answer in time: count what came
                count = len(exc.results)
            workers = sio.manager.server_count()
        await sio.emit("connections", {"count": count, "workers": workers,
                                       "announcer_pid": os.getpid()})
        await asyncio.sleep(CONNECTIONS_EVERY_S)


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


async def index(_request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def vendor(request: web.Request) -> web.FileResponse:
    """The official browser client, from the npm package that setup.sh installs."""
    path = (VENDOR / request.match_info["name"]).resolve()
    if not VENDOR.is_dir():
        raise web.HTTPNotFound(text="socket.io-client is not installed: run examples/chat/setup.sh")
    if path.parent != VENDOR.resolve() or not path.is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(path)


def make_app() -> web.Application:
    application = web.Application()
    sio.attach(application)
    application.router.add_get("/", index)
    application.router.add_get("/vendor/{name}", vendor)
    return application


app = make_app()
