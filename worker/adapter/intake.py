"""Emits from outside the cluster, as the manager takes them in.

Emits from outside the cluster (:mod:`.external`) come from *sources*
attached with :meth:`ExternalIntake.attach_source` (python-socketio's pub/sub
channel, the AMQP emit queue) or from the master (``POST /emit``):
:meth:`ExternalIntake.apply` applies one to this worker's sockets only, or,
with ``broadcast=True``, through the adapter like an emit of the app.

``emits`` counts emits by source (the manager's own ``broadcast`` counts as
``internal``); ``refused`` counts what was refused, by ``source/reason``.
A source that is down turns the adapter's state to ``degraded`` (see
:meth:`ExternalIntake.degraded`), so /health says so.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING, Protocol

from ..control import ExternalStatus
from .external import ExternalClose, ExternalEmit, ExternalOp, ExternalRooms, Refused

if TYPE_CHECKING:
    from .manager import ClusterManager

__all__ = ["ExternalIntake", "ExternalSource"]

log = logging.getLogger("siocluster.adapter")


class ExternalSource(Protocol):
    """Where emits from outside the cluster come in (see :meth:`ClusterManager.attach_source`)."""

    name: str  # the ``source`` label: "redis-emitter", "amqp"

    async def start(self, manager: ClusterManager) -> None: ...

    def status(self) -> ExternalStatus: ...

    async def close(self) -> None: ...


class ExternalIntake:
    """The sources, counters and op application of one :class:`ClusterManager`."""

    def __init__(self, manager: ClusterManager) -> None:
        self._manager = manager
        self.sources: list[ExternalSource] = []
        self.emits: Counter[str] = Counter()  # by source: internal, http, redis-emitter ...
        self.refused: Counter[str] = Counter()  # external messages, by "source/reason"

    async def attach_source(self, source: ExternalSource) -> None:
        self.sources.append(source)
        await source.start(self._manager)

    async def close_sources(self) -> None:
        for source in self.sources:
            try:
                await source.close()
            except Exception as exc:
                log.warning("closing the %s source failed: %r", source.name, exc)

    def status(self) -> dict[str, ExternalStatus]:
        return {s.name: s.status() for s in self.sources}

    @staticmethod
    def degraded(external: dict[str, ExternalStatus]) -> bool:
        """Whether a way in from outside is down."""
        return any(e.state == "degraded" for e in external.values())

    def refuse(self, source: str, refused: Refused) -> None:
        key = f"{source}/{refused.reason}"
        if not self.refused[key]:
            log.warning("refusing a %s message (%s): %s; counted in "
                        "siocluster_external_refused", source, refused.reason, refused.detail)
        self.refused[key] += 1

    async def apply(self, op: ExternalOp, *, source: str, broadcast: bool = False) -> None:
        manager = self._manager
        if isinstance(op, ExternalEmit):
            self.emits[source] += 1
            if broadcast:
                await manager._broadcast(op.event, list(op.args), op.rooms or None,
                                         op.namespace, op.exclude, None)
            else:
                await manager._deliver(op.event, list(op.args), op.namespace, op.rooms,
                                       op.exclude, None)
        elif isinstance(op, ExternalClose):
            if broadcast:
                await manager.close_room(op.room, op.namespace)
            else:
                await manager.close_room_here(op.room, op.namespace)
        elif isinstance(op, ExternalRooms):
            await self._apply_rooms(op, broadcast)

    async def _apply_rooms(self, op: ExternalRooms, broadcast: bool) -> None:
        manager = self._manager
        nsp = op.namespace
        here = manager.is_connected(op.sid, nsp) or manager.is_pre_connected(op.sid, nsp)
        if not here and not broadcast:
            return
        if op.method == "disconnect":
            await manager.server.disconnect(op.sid, namespace=nsp, ignore_queue=here)
        elif op.method == "enter_room" and op.room is not None:
            await manager.enter_room(op.sid, nsp, op.room)
        elif op.method == "leave_room" and op.room is not None:
            await manager.leave_room(op.sid, nsp, op.room)
