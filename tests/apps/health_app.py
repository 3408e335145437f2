"""An app that misbehaves on request, for the health and restart tests."""

from __future__ import annotations

import os
import time
from typing import Any

import socketio
from aiohttp import web

sio = socketio.AsyncServer(async_mode="aiohttp")
_hog: list[bytes] = []


@sio.event
async def whoami(sid: str) -> dict[str, Any]:
    return {"pid": os.getpid(), "sid": sid}


@sio.event
async def hog(sid: str, megabytes: int) -> int:
    _hog.append(os.urandom(megabytes * 1024 * 1024))
    return sum(len(b) for b in _hog)


@sio.event
async def block(sid: str, seconds: float) -> None:
    time.sleep(seconds)  # a blocked event loop, on purpose


async def _crash_soon(app: web.Application) -> None:
    delay = float(os.environ.get("HEALTH_APP_CRASH_AFTER_S", "0"))
    if delay:
        import asyncio

        asyncio.get_running_loop().call_later(delay, os._exit, 7)


app = web.Application()
sio.attach(app)
app.on_startup.append(_crash_soon)
