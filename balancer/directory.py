"""The balancer's view of the workers: the interface the supervisor implements."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Protocol

from .routing import WorkerView

__all__ = ["WorkerDirectory"]


class WorkerDirectory(Protocol):
    @property
    def engineio_path(self) -> str: ...

    def views(self) -> Sequence[WorkerView]: ...

    def socket_path(self, slot: int, generation: int) -> str: ...

    def note_handshake(self, slot: int, generation: int) -> None: ...

    def handoff_channel(self, slot: int, generation: int) -> socket.socket | None:
        """The worker's SOCK_SEQPACKET end for passing client sockets, if it has one."""
        ...

    # Several hosts, one cluster ("" and nothing live when this host is the cluster)

    @property
    def host_id(self) -> str: ...

    def live_hosts(self) -> frozenset[str]: ...

    def peer_address(self, host: str) -> str | None:
        """Where host ``host``'s balancer is reached, while it is live."""
        ...

    def note_peer(self, host: str, error: str | None) -> None:
        """How the last forward to ``host`` went: None when it was answered."""
        ...
