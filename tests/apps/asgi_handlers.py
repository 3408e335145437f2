"""The events of echo_app.py on an ``AsyncServer(async_mode="asgi")``, for the ASGI shapes."""

from __future__ import annotations

import os
from typing import Any

import socketio

__all__ = ["lifespan_marker", "make_sio"]


def make_sio() -> Any:
    sio = socketio.AsyncServer(async_mode="asgi")
    received: list[Any] = []

    @sio.event
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        scope = environ.get("asgi.scope", {})
        await sio.save_session(sid, {"remote": environ.get("REMOTE_ADDR"),
                                     "scope_client": list(scope.get("client") or []),
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

    return sio


def lifespan_marker(event: str) -> None:
    """Append ``event`` to ``$MARK_DIR/<pid>``: the tests count startups and shutdowns."""
    directory = os.environ.get("MARK_DIR")
    if directory:
        with open(os.path.join(directory, str(os.getpid())), "a") as f:
            f.write(event + "\n")
