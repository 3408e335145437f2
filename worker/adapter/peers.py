"""Which other workers are alive, from heartbeats and transport events.

Theory of operation
-------------------

Every frame from a peer proves it alive (:meth:`PeerTable.seen`).  A peer not
heard from for ``timeout_s`` is dead (:meth:`expire`), and so is one whose
transport reported it gone or that said BYE (:meth:`forget`).  Cluster
requests count only live peers as expected responders, so a dead worker costs
at most one heartbeat timeout, not a request timeout.

While the broker is unreachable nobody's heartbeats arrive, and that says
nothing about the peers: :meth:`freeze` stops expiry and :meth:`thaw` restarts
every clock from the moment the broker came back.

Pure: the caller passes ``now`` from ``time.monotonic()``.
"""

from __future__ import annotations

__all__ = ["PeerTable"]


class PeerTable:
    def __init__(self, node: str, *, timeout_s: float) -> None:
        self.node = node
        self.timeout_s = timeout_s
        self._last_seen: dict[str, float] = {}
        self._frozen = False

    def seen(self, node: str, now: float) -> bool:
        """Record a sign of life; True when ``node`` is new (or came back)."""
        if node == self.node:
            return False
        new = node not in self._last_seen
        self._last_seen[node] = now
        return new

    def forget(self, node: str) -> bool:
        """``node`` is gone; True when it was known."""
        return self._last_seen.pop(node, None) is not None

    def expire(self, now: float) -> list[str]:
        """Forget and return the peers silent for longer than ``timeout_s``."""
        if self._frozen:
            return []
        dead = [n for n, t in self._last_seen.items() if now - t > self.timeout_s]
        for node in dead:
            del self._last_seen[node]
        return dead

    def freeze(self) -> None:
        self._frozen = True

    def thaw(self, now: float) -> None:
        self._frozen = False
        for node in self._last_seen:
            self._last_seen[node] = now

    def live(self) -> frozenset[str]:
        return frozenset(self._last_seen)

    def __contains__(self, node: object) -> bool:
        return node in self._last_seen

    def __len__(self) -> int:
        return len(self._last_seen)
