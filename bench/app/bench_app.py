"""The app every benchmark target serves: cluster workers and standalone servers alike.

It lives alone in ``bench/app/`` because ``siocluster run bench_app:app`` is
started with that directory as its working directory (the app is imported from
the current directory), so nothing else of ``bench/`` can shadow an import.

Events:

* ``echo(data)`` -> ``data`` (as the ack);
* ``fanout(data)``: broadcast ``tick(data)`` to every client but the sender,
  then ack ``True``.
"""

from __future__ import annotations

import logging
from typing import Any

import socketio
from aiohttp import web

__all__ = ["app", "sio"]

logging.getLogger("socketio").setLevel(logging.WARNING)
logging.getLogger("engineio").setLevel(logging.WARNING)

sio = socketio.AsyncServer(async_mode="aiohttp", logger=False, engineio_logger=False)


async def echo(sid: str, data: Any = None) -> Any:
    return data


async def fanout(sid: str, data: Any = None) -> bool:
    await sio.emit("tick", data, skip_sid=sid)
    return True


sio.on("echo", echo)
sio.on("fanout", fanout)
app = web.Application()
sio.attach(app)
