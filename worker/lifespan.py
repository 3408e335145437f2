"""The ASGI lifespan protocol, driven once per worker.

The app is called once with a ``lifespan`` scope and lives as a task for the
whole worker.  :meth:`Lifespan.startup` sends ``lifespan.startup`` and waits
for the app's answer; :meth:`Lifespan.shutdown` sends ``lifespan.shutdown``
after the worker drained.  ``state`` is the dict ASGI 3 gives the app in the
scope: the protocol classes copy it into every request's scope, which is how
Starlette's ``request.state`` sees what ``lifespan=`` yielded.

Outcomes of startup, as uvicorn's ``--lifespan auto`` decides them:

* ``lifespan.startup.complete``: serve;
* ``lifespan.startup.failed`` (Starlette/FastAPI send it with the traceback
  when a startup hook or the ``lifespan=`` context raises): raise
  :class:`LifespanFailed`, a boot failure;
* the app raises before answering, or returns without answering: it does not
  speak lifespan (a bare ASGI callable that only knows ``http``); serve, and
  skip the shutdown.

Why not uvicorn's ``LifespanOn``: it logs the failure and sets a flag, where
the worker must hand the traceback to the master (``BootFailed``); and it is
small enough that owning it costs less than reaching into uvicorn for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["Lifespan", "LifespanFailed"]

log = logging.getLogger("siocluster.worker")

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


class LifespanFailed(Exception):
    """The app's lifespan startup failed; ``details`` holds its traceback."""

    def __init__(self, message: str, details: str) -> None:
        super().__init__(message)
        self.details = details


class Lifespan:
    def __init__(self, app: AsgiApp) -> None:
        self.app = app
        self.state: dict[str, Any] = {}
        self.supported = True
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._answers: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None

    async def _main(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"},
                 "state": self.state}
        try:
            await self.app(scope, self._inbox.get, self._answers.put)
        except BaseException as exc:
            self._error = exc
        finally:
            await self._answers.put({"type": "_returned"})

    async def _exchange(self, event: str) -> Message:
        await self._inbox.put({"type": event})
        return await self._answers.get()

    async def startup(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._main())
        answer = await self._exchange("lifespan.startup")
        kind = answer["type"]
        if kind == "lifespan.startup.complete":
            return
        if kind == "lifespan.startup.failed":
            message = str(answer.get("message") or "")
            raise LifespanFailed("ASGI lifespan startup failed", message)
        self.supported = False
        if self._error is not None:
            log.info(
                "the app does not speak ASGI lifespan (%s: %s); serving without it",
                type(self._error).__name__, self._error,
            )

    async def shutdown(self, timeout_s: float) -> None:
        if not self.supported or self._task is None or self._task.done():
            return
        try:
            answer = await asyncio.wait_for(self._exchange("lifespan.shutdown"), timeout_s)
        except TimeoutError:
            log.warning("stop: ASGI lifespan shutdown did not finish in %.1fs", timeout_s)
            self._task.cancel()
        else:
            if answer["type"] == "lifespan.shutdown.failed":
                log.error("ASGI lifespan shutdown failed: %s", answer.get("message", ""))
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(self._task, 1.0)

