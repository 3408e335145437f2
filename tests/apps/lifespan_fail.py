"""A FastAPI app whose lifespan startup raises: a boot failure (exit 3), not a respawn loop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import socketio
from asgi_handlers import lifespan_marker, make_sio
from fastapi import FastAPI


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    lifespan_marker("start")
    raise RuntimeError("database unreachable at startup")
    yield


app = socketio.ASGIApp(make_sio(), other_asgi_app=FastAPI(lifespan=lifespan))
