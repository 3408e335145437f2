"""A cluster singleton ticking every SINGLETON_TICK_S (0.2 s) with its worker's pid.

Each tick is emitted to every client, then (only once the emit passed the
lease fence) appended to SINGLETON_TICK_LOG when set, so tests can check
emission times independently of which clients were connected.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import socketio
from aiohttp import web

from worker.singleton import singleton

sio = socketio.AsyncServer(async_mode="aiohttp")
app = web.Application()
sio.attach(app)

PERIOD_S = float(os.environ.get("SINGLETON_TICK_S", "0.2"))
LOG = os.environ.get("SINGLETON_TICK_LOG", "")


@singleton("ticker")
async def ticker() -> None:
    n = 0
    while True:
        n += 1
        tick = {"pid": os.getpid(), "n": n, "t": time.time()}
        await sio.emit("tick", tick)
        if LOG:
            with open(LOG, "a") as f:
                f.write(f"{tick['pid']} {n} {tick['t']:.4f}\n")
        await asyncio.sleep(PERIOD_S)


@sio.event
async def whoami(sid: str) -> dict[str, Any]:
    return {"pid": os.getpid(), "sid": sid}


@sio.event
async def block(sid: str, seconds: float) -> None:
    """Hang this worker's event loop (a bug in an app handler)."""
    time.sleep(seconds)
