"""Dynamic room channels on Redis: which the listen connection holds, and which it should.

With several hosts in one cluster, an emit to one room goes to that room's own
channel (:mod:`.delivery`), and a worker listens to it only while it holds the
room.  The manager says so through :meth:`RoomSubscriptions.interest`; one
task (:meth:`RoomSubscriptions.sync_forever`) reconciles what is wanted with
what is subscribed on the listen loop's connection.  When that connection
drops, nothing is subscribed (:meth:`RoomSubscriptions.detached`); when it is
back, the listen loop subscribes every wanted room with its own channels
(:meth:`RoomSubscriptions.channels_wanted`, then
:meth:`RoomSubscriptions.attached`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

__all__ = ["RoomSubscriptions"]

log = logging.getLogger("siocluster.adapter.redis")


class RoomSubscriptions:
    def __init__(self, channel_for: Callable[[str], str]) -> None:
        self._channel_for = channel_for
        self.wanted: set[str] = set()
        self.subscribed: set[str] = set()
        self._changed = asyncio.Event()
        self._pubsub: Any = None
        self._sharded: bool | None = None

    def interest(self, key: str, on: bool) -> None:
        if on:
            self.wanted.add(key)
        else:
            self.wanted.discard(key)
        self._changed.set()

    def channels_wanted(self) -> list[str]:
        return [self._channel_for(key) for key in sorted(self.wanted)]

    def attached(self, pubsub: Any, sharded: bool | None) -> None:
        """The listen connection subscribed every wanted room (as wanted just now)."""
        self.subscribed = set(self.wanted)
        self._pubsub = pubsub
        self._sharded = sharded
        self._changed.set()

    def detached(self) -> None:
        self._pubsub = None
        self.subscribed = set()

    async def sync_forever(self) -> None:
        """Make the listen connection's room subscriptions what ``interest`` asked for."""
        while True:
            await self._changed.wait()
            self._changed.clear()
            pubsub = self._pubsub
            if pubsub is None:
                continue  # the listen loop subscribes them all when it reconnects
            add = sorted(self.wanted - self.subscribed)
            drop = sorted(self.subscribed - self.wanted)
            try:
                if add:
                    channels = [self._channel_for(k) for k in add]
                    await (pubsub.ssubscribe if self._sharded else pubsub.subscribe)(*channels)
                if drop:
                    channels = [self._channel_for(k) for k in drop]
                    await (pubsub.sunsubscribe if self._sharded else pubsub.unsubscribe)(
                        *channels)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The listen loop sees the same broken connection, reconnects and
                # subscribes to every wanted room then.
                log.debug("redis room subscription failed: %r", exc)
                continue
            if pubsub is self._pubsub:
                self.subscribed.update(add)
                self.subscribed.difference_update(drop)
