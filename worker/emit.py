"""A worker's side of ``POST /emit``: apply one :class:`~worker.control.Emit`.

The master chose this worker (see :mod:`supervisor.emit`).  With the
cross-worker adapter installed the emit goes through
:meth:`~worker.adapter.manager.ClusterManager.apply_external` (counted under
``http``); with ``[adapter] backend = "none"`` python-socketio's own manager
delivers it to this worker's clients.  The reply, :class:`EmitDone`, is
written once the message is handed over, with the error if any.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec

from . import control
from .adapter.external import ExternalEmit
from .adapter.manager import ClusterManager

__all__ = ["apply_emit"]

log = logging.getLogger("siocluster.worker")


async def apply_emit(sio: Any, msg: control.Emit, writer: asyncio.StreamWriter) -> None:
    error = ""
    try:
        args = msgspec.json.decode(msg.args)
        if not isinstance(args, list):
            raise ValueError("args is not a JSON array")
        manager = sio.manager
        if isinstance(manager, ClusterManager):
            op = ExternalEmit(msg.event, tuple(args), msg.namespace, tuple(msg.rooms),
                              tuple(msg.except_rooms))
            await manager.apply_external(op, source="http", broadcast=msg.broadcast)
        else:
            # python-socketio's skip_sid takes sids only: expand except-rooms.
            skip = {sid for room in msg.except_rooms
                    for sid, _ in manager.get_participants(msg.namespace, room)}
            await sio.emit(msg.event, tuple(args), namespace=msg.namespace,
                           to=list(msg.rooms) or None, skip_sid=sorted(skip) or None)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.warning("POST /emit of %r failed: %r", msg.event, exc)
        error = f"{type(exc).__name__}: {exc}"
    if not writer.is_closing():
        writer.write(control.encode(control.EmitDone(id=msg.id, error=error)))
