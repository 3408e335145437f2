"""bench_app.py's events as an ASGI app: what FastAPI/uvicorn users of python-socketio run.

``siocluster run bench_asgi:app`` for the cluster; ``uvicorn bench_asgi:app``
(httptools, uvloop, websockets: uvicorn's defaults with uvicorn[standard]),
one process per port, for the "direct" figures.
"""

from __future__ import annotations

import logging
from typing import Any

import socketio

__all__ = ["app", "sio"]

logging.getLogger("socketio").setLevel(logging.WARNING)
logging.getLogger("engineio").setLevel(logging.WARNING)

sio = socketio.AsyncServer(async_mode="asgi", logger=False, engineio_logger=False)


async def echo(sid: str, data: Any = None) -> Any:
    return data


async def fanout(sid: str, data: Any = None) -> bool:
    await sio.emit("tick", data, skip_sid=sid)
    return True


sio.on("echo", echo)
sio.on("fanout", fanout)
app = socketio.ASGIApp(sio)
