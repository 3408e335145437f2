"""A raw Engine.IO v4 / Socket.IO v5 client over aiohttp, for tests that need
control over every request (keep-alive reuse, stale sids, storms)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

EIO_PATH = "/socket.io/"


async def handshake(http: aiohttp.ClientSession, base: str,
                    path: str = EIO_PATH) -> dict[str, Any]:
    async with http.get(f"{base}{path}?EIO=4&transport=polling") as resp:
        text = await resp.text()
        assert resp.status == 200, (resp.status, text)
    assert text.startswith("0"), text
    return json.loads(text[1:])  # type: ignore[no-any-return]


async def post(http: aiohttp.ClientSession, base: str, sid: str, payload: str,
               path: str = EIO_PATH) -> int:
    async with http.post(f"{base}{path}?EIO=4&transport=polling&sid={sid}",
                         data=payload.encode()) as resp:
        await resp.read()
        return resp.status


async def poll(http: aiohttp.ClientSession, base: str, sid: str,
               path: str = EIO_PATH) -> tuple[int, str]:
    async with http.get(f"{base}{path}?EIO=4&transport=polling&sid={sid}") as resp:
        return resp.status, await resp.text()


async def connect_and_upgrade(http: aiohttp.ClientSession, base: str,
                              path: str = EIO_PATH) -> tuple[str, Any]:
    """Polling handshake, namespace connect, then the WebSocket upgrade, as clients do."""
    info = await handshake(http, base, path)
    sid = info["sid"]
    assert await post(http, base, sid, "40", path) == 200
    status, text = await poll(http, base, sid, path)
    assert status == 200 and text.startswith("40"), (status, text)
    ws_url = base.replace("http", "ws", 1) + f"{path}?EIO=4&transport=websocket&sid={sid}"
    ws = await http.ws_connect(ws_url)
    await ws.send_str("2probe")
    msg = await ws.receive(timeout=10)
    assert msg.data == "3probe", msg
    await ws.send_str("5")
    return sid, ws


async def ws_call(ws: Any, event: str, *args: Any, ack_id: int = 1) -> Any:
    await ws.send_str(f"42{ack_id}" + json.dumps([event, *args]))
    while True:
        msg = await ws.receive(timeout=10)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        if msg.data == "2":
            await ws.send_str("3")
            continue
        if msg.data.startswith(f"43{ack_id}"):
            return json.loads(msg.data[len(f"43{ack_id}"):])[0]
