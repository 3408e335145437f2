"""bench_app.py's events as an ASGI app: what FastAPI/uvicorn users of python-socketio run.

``siocluster run bench_asgi:app`` for the cluster; ``uvicorn bench_asgi:app``
(httptools, uvloop, websockets: uvicorn's defaults with uvicorn[standard]),
one process per port, for the "direct" figures; with ``BENCH_REDIS_URL`` set
(the ``--peers`` HAProxy stack), python-socketio's ``AsyncRedisManager``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import socketio

__all__ = ["app", "sio"]

logging.getLogger("socketio").setLevel(logging.WARNING)
logging.getLogger("engineio").setLevel(logging.WARNING)

# The bench's HAProxy stack runs N uvicorn processes that broadcast to each other
# through python-socketio's own AsyncRedisManager; the cluster never sets this.
_REDIS_URL = os.environ.get("BENCH_REDIS_URL")
sio = socketio.AsyncServer(
    async_mode="asgi", logger=False, engineio_logger=False,
    client_manager=socketio.AsyncRedisManager(_REDIS_URL) if _REDIS_URL else None)


async def echo(sid: str, data: Any = None) -> Any:
    return data


async def fanout(sid: str, data: Any = None) -> bool:
    await sio.emit("tick", data, skip_sid=sid)
    return True


sio.on("echo", echo)
sio.on("fanout", fanout)
app = socketio.ASGIApp(sio)
