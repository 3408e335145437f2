"""The test app for [auth], rate limits and typed events: it reports what it sees."""

from __future__ import annotations

import os
from typing import Any

import msgspec
import socketio

from worker.auth import CLAIMS_KEY, get_claims
from worker.typed import typed

# The same app as an ASGI app (served by uvicorn's protocols) with SECURE_APP_ASYNC_MODE=asgi.
sio = socketio.AsyncServer(async_mode=os.environ.get("SECURE_APP_ASYNC_MODE", "aiohttp"))
handled: dict[str, int] = {}


class ChatMessage(msgspec.Struct, forbid_unknown_fields=True):
    room: str
    text: str


@sio.event
async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
    # Replaces the session, as apps do; the claims survive it.
    await sio.save_session(sid, {"connected_pid": os.getpid(),
                                 "auth_keys": sorted(auth) if isinstance(auth, dict) else None})


@sio.event
async def whoami(sid: str) -> dict[str, Any]:
    session = await sio.get_session(sid)
    return {"pid": os.getpid(), "claims": session.get(CLAIMS_KEY),
            "helper": await get_claims(sio, sid), "auth_keys": session["auth_keys"]}


@sio.event
async def tick(sid: str, n: int) -> None:
    handled[sid] = handled.get(sid, 0) + 1


@sio.event
async def ticks(sid: str) -> int:
    return handled.get(sid, 0)


@sio.event
async def echo(sid: str, data: Any) -> Any:
    return data


@typed(sio, "chat message", ChatMessage)
async def chat_message(sid: str, msg: ChatMessage) -> dict[str, Any]:
    return {"ok": True, "room": msg.room, "length": len(msg.text)}


app = sio
