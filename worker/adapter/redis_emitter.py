"""python-socketio's Redis emitters, heard by every worker.

Theory of operation
-------------------

``socketio.AsyncRedisManager(url, write_only=True).emit(...)`` (and the sync
``RedisManager``) PUBLISHes one JSON message on a plain (not sharded) pub/sub
channel, ``socketio`` unless told otherwise.  Every worker SUBSCRIBEs to that
channel on a connection of its own and applies each message to *its own*
sockets (:meth:`~.manager.ClusterManager.apply_external` without broadcast):
a client lives on exactly one worker, so it gets the message exactly once,
whatever the number of workers or hosts, and nothing is re-published.

Pub/sub keeps nothing for a subscriber that is not connected: a message
published while this worker's subscription is down is lost, as with
python-socketio's own servers.  The outage is visible (``state`` and
``reconnects`` in the status, the adapter's own state in /health); the loop
reconnects with exponential backoff and jitter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

import redis.asyncio as aioredis

from ..control import ExternalStatus
from .external import Refused, parse_message

if TYPE_CHECKING:
    from .manager import ClusterManager

__all__ = ["RedisEmitterSource"]

log = logging.getLogger("siocluster.adapter.redis")


class RedisEmitterSource:
    name = "redis-emitter"

    def __init__(
        self,
        connect: Callable[[], aioredis.Redis],
        channel: str,
        *,
        # Timeouts
        backoff_initial_s: float = 0.05,
        backoff_max_s: float = 2.0,
    ) -> None:
        self.connect = connect  # a fresh client (the redis transport's: same URL, sentinel...)
        self.channel = channel
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._manager: ClusterManager | None = None
        # Counters
        self.received = 0
        self.errors = 0
        self.reconnects = 0

    async def start(self, manager: ClusterManager) -> None:
        self._manager = manager
        self._task = asyncio.create_task(self._listen_forever())
        # Like the adapter: subscribed before the worker reports ready, when Redis is up.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(manager.request_timeout_s):
                await self.subscribed.wait()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def status(self) -> ExternalStatus:
        return ExternalStatus(
            channel=self.channel,
            state="connected" if self.subscribed.is_set() else "degraded",
            received=self.received,
            errors=self.errors,
            reconnects=self.reconnects,
        )

    async def handle(self, raw: bytes) -> None:
        assert self._manager is not None
        self.received += 1
        op = parse_message(raw)
        if op is None:
            return
        if isinstance(op, Refused):
            self._manager.refuse(self.name, op)
            return
        try:
            await self._manager.apply_external(op, source=self.name)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.errors += 1
            log.exception("applying a message from the %r channel failed", self.channel)

    async def _listen_forever(self) -> None:
        delay = self.backoff_initial_s
        ever = False
        while True:
            client = self.connect()
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                if ever:
                    self.reconnects += 1
                ever = True
                self.subscribed.set()
                delay = self.backoff_initial_s
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        await self.handle(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.errors += 1
                log.debug("redis emitter channel %r: %r", self.channel, exc)
            finally:
                self.subscribed.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                with contextlib.suppress(Exception):
                    await client.aclose()
            await asyncio.sleep(delay)
            delay = min(self.backoff_max_s, delay * 2) * random.uniform(0.8, 1.2)
