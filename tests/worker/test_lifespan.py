"""worker.lifespan against small ASGI apps and a real FastAPI app."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi import FastAPI

from worker.lifespan import Lifespan, LifespanFailed


def test_fastapi_lifespan_runs_startup_then_shutdown_with_state() -> None:
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        events.append("start")
        yield {"db": "connected"}
        events.append("stop")

    async def main() -> None:
        life = Lifespan(FastAPI(lifespan=lifespan))
        await life.startup()
        assert events == ["start"] and life.state == {"db": "connected"}
        await life.shutdown(5.0)
        assert events == ["start", "stop"]

    asyncio.run(main())


def test_startup_failure_carries_the_traceback() -> None:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        raise RuntimeError("no database")
        yield

    async def main() -> None:
        with pytest.raises(LifespanFailed) as failed:
            await Lifespan(FastAPI(lifespan=lifespan)).startup()
        assert "RuntimeError: no database" in failed.value.details
        assert "Traceback" in failed.value.details

    asyncio.run(main())


def test_an_app_without_lifespan_is_served_without_it() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"

    async def returns(scope: Any, receive: Any, send: Any) -> None:
        return None

    async def main() -> None:
        for candidate in (app, returns):
            life = Lifespan(candidate)
            await life.startup()
            assert not life.supported
            await life.shutdown(1.0)  # nothing to do, and no hang

    asyncio.run(main())


def test_a_shutdown_that_hangs_is_bounded() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await asyncio.sleep(3600)

    async def main() -> None:
        life = Lifespan(app)
        await life.startup()
        loop = asyncio.get_running_loop()
        started = loop.time()
        await life.shutdown(0.2)
        assert loop.time() - started < 2.0

    asyncio.run(main())
