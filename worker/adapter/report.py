"""What the adapter tells the master in each heartbeat (:class:`~worker.control.AdapterStatus`).

The figures are the manager's parts' counters plus its transport's, summed
where both count the same thing: ``dropped`` is what the transport dropped,
let overflow or let expire; ``undeliverable`` and ``errors`` add the
transport's to the manager's.  The state is the transport's, but
``degraded`` while a way in from outside (:mod:`.intake`) is down, so
/health says so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..control import AdapterFigures, AdapterStatus

if TYPE_CHECKING:
    from .manager import ClusterManager

__all__ = ["adapter_status"]


def adapter_status(manager: ClusterManager) -> AdapterStatus:
    transport = manager.transport.status()
    state = manager.transport.state.name.lower()
    external = manager.intake.status()
    if state == "connected" and manager.intake.degraded(external):
        state = "degraded"  # a way in from outside is down: /health says so
    wire, calls, link = manager.wire, manager.calls, manager.link
    figures = AdapterFigures(
        node=manager.node,
        peers=sorted(manager.peers.live()),
        server_count=manager.server_count(),
        sent=wire.sent,
        received=wire.received,
        heartbeats_sent=wire.heartbeats_sent,
        heartbeats_received=wire.heartbeats_received,
        dropped=(transport.count("transport_dropped") + transport.count("overflowed")
                 + transport.count("expired")),
        undeliverable=(manager.undeliverable + link.undeliverable
                       + transport.count("undeliverable_remote")),
        duplicates=wire.dedupe.duplicates,
        lost=wire.dedupe.lost,
        skipped=link.skipped,
        errors=(link.errors + calls.malformed + calls.unsendable_sessions
                + transport.transport_errors),
        handler_errors=calls.handler_errors,
        requests_pending=len(calls.requests),
        requests_timed_out=calls.timeouts,
        buffered_bytes=transport.buffered_bytes,
        transport=transport,
        external=external,
        emits=dict(manager.intake.emits),
        external_refused=dict(manager.intake.refused),
    )
    return AdapterStatus(manager.transport.name, state, figures)
