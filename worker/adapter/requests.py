"""Cluster requests waiting for replies from a known set of peers.

Theory of operation
-------------------

A request (fetch_sockets, server_side_emit with acks) is sent to every live
peer and :meth:`RequestTable.open` records those peers as *expected*.  Each
reply (:meth:`reply`) or peer death (:meth:`peer_gone`) shrinks the expected
set; when it is empty the request's future resolves with ``{node: reply}``.
The caller awaits the future with its timeout and, on timeout, reads the
partial replies back with :meth:`abandon`.  Replies to unknown or finished
requests are ignored (a late peer, or a duplicate).

No I/O: the futures are plain asyncio futures resolved synchronously.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from typing import Any

__all__ = ["Pending", "RequestTable"]


@dataclasses.dataclass(slots=True)
class Pending:
    expected: set[str]
    future: asyncio.Future[dict[str, Any]]
    replies: dict[str, Any] = dataclasses.field(default_factory=dict)
    lost: set[str] = dataclasses.field(default_factory=set)

    def settle_if_done(self) -> bool:
        if self.expected or self.future.done():
            return False
        self.future.set_result(self.replies)
        return True


class RequestTable:
    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._pending: dict[int, Pending] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def open(self, expected: frozenset[str] | set[str]) -> tuple[int, Pending]:
        rid = next(self._ids)
        loop = asyncio.get_running_loop()
        pending = Pending(set(expected), loop.create_future())
        if not pending.settle_if_done():
            self._pending[rid] = pending
        return rid, pending

    def reply(self, rid: int, node: str, value: Any) -> bool:
        """Record ``node``'s reply; True when that completed the request."""
        pending = self._pending.get(rid)
        if pending is None or node not in pending.expected:
            return False
        pending.expected.discard(node)
        pending.replies[node] = value
        if pending.settle_if_done():
            del self._pending[rid]
            return True
        return False

    def peer_gone(self, node: str) -> int:
        """Stop waiting for ``node`` everywhere; return how many requests it completed."""
        completed = 0
        for rid, pending in list(self._pending.items()):
            if node in pending.expected:
                pending.expected.discard(node)
                pending.lost.add(node)
                if pending.settle_if_done():
                    del self._pending[rid]
                    completed += 1
        return completed

    def abandon(self, rid: int) -> Pending | None:
        """Forget ``rid`` (timed out or cancelled) and hand back what arrived."""
        return self._pending.pop(rid, None)

    def cancel_all(self) -> None:
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.cancel()
        self._pending.clear()
