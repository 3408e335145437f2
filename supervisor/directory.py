"""The balancer's view of this master's workers and hosts (a ``WorkerDirectory``).

The balancer routes every request from :meth:`MasterDirectory.views`: one
frozen :class:`~balancer.routing.WorkerView` per worker process, rebuilt only
after something the routing reads has changed (the master calls
:meth:`MasterDirectory.invalidate` after a spawn, an exit, a state change or
a heartbeat).  The list of handles is the master's own, shared, not copied.
With several hosts the host book (:mod:`supervisor.hosts`) answers for the
peers; alone, this host has no id and no peers.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence

from balancer.routing import WorkerView

from .handle import WorkerHandle
from .hosts import HostsService
from .state import WorkerState

__all__ = ["MasterDirectory"]


class MasterDirectory:
    def __init__(self, handles: list[WorkerHandle],
                 hosts: Callable[[], HostsService | None]) -> None:
        self._handles = handles
        self._hosts = hosts
        self._views: list[WorkerView] | None = None
        self.runtime_dir = ""  # set once the master made it
        # What the workers' Ready said (python-socketio's ``path``).
        self.engineio_path = "/socket.io/"

    def views(self) -> Sequence[WorkerView]:
        if self._views is None:
            self._views = [
                WorkerView(
                    slot=h.slot,
                    generation=h.generation,
                    accepting=h.state is WorkerState.READY,
                    serving=h.state in (WorkerState.READY, WorkerState.DRAINING),
                    load=h.load,
                )
                for h in self._handles
            ]
        return self._views

    def invalidate(self) -> None:
        self._views = None

    def socket_path(self, slot: int, generation: int) -> str:
        return os.path.join(self.runtime_dir, f"worker-{slot}-{generation:x}.sock")

    def handoff_channel(self, slot: int, generation: int) -> socket.socket | None:
        for h in self._handles:
            if h.slot == slot and h.generation == generation:
                return h.process.handoff
        return None

    def note_handshake(self, slot: int, generation: int) -> None:
        for h in self._handles:
            if h.slot == slot and h.generation == generation:
                h.handshakes_assigned += 1
                self.invalidate()
                return

    # Several hosts

    @property
    def host_id(self) -> str:
        hosts = self._hosts()
        return hosts.host_id if hosts is not None else ""

    def live_hosts(self) -> frozenset[str]:
        hosts = self._hosts()
        return hosts.book.live_ids() if hosts is not None else frozenset()

    def peer_address(self, host: str) -> str | None:
        hosts = self._hosts()
        return hosts.book.address(host) if hosts is not None else None

    def note_peer(self, host: str, error: str | None) -> None:
        hosts = self._hosts()
        if hosts is not None:
            hosts.book.note_forward(host, error)
