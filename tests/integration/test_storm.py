"""The connect storm: 1,000 sessions doing the polling handshake and the upgrade at once.

Node's @socket.io/sticky lost sessions in this test (its sid table is filled
after the handshake answer is already out).  Routing by the sid itself cannot.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.cluster import start_cluster
from tests.eio import EIO_PATH, connect_and_upgrade, ws_call

SESSIONS = int(os.environ.get("SIOCLUSTER_STORM_SESSIONS", "1000"))
CONCURRENCY = 200


async def storm(url: str, path: str = EIO_PATH, *,
                force_close: bool = False) -> tuple[list[Any], list[str], set[int]]:
    """``force_close``: a new connection for every request (no keep-alive)."""
    connector = aiohttp.TCPConnector(limit=0, force_close=force_close)
    sockets: list[Any] = []
    failures: list[str] = []
    pids: set[int] = set()
    gate = asyncio.Semaphore(CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one(i: int) -> None:
            async with gate:
                try:
                    _sid, ws = await connect_and_upgrade(http, url, path)
                    who = await ws_call(ws, "whoami")
                    pids.add(who["pid"])
                    sockets.append(ws)
                except Exception as exc:  # every failure is counted, none hidden
                    failures.append(f"{i}: {exc!r}")

        await asyncio.gather(*(one(i) for i in range(SESSIONS)))
        for ws in sockets:
            await ws.close()
    return sockets, failures, pids


@pytest.mark.parametrize("mode", ["handoff", "tunnel"])
def test_connect_storm_loses_no_session(tmp_path: Path, mode: str) -> None:
    with start_cluster(workers=2, tmp_path=tmp_path, args=("--websocket", mode)) as cluster:
        sockets, failures, pids = asyncio.run(storm(cluster.url))
        assert failures == [], failures[:5]
        assert len(sockets) == SESSIONS
        assert len(pids) == 2
        balancer = cluster.status()["balancer"]
        assert balancer["session_unknown_400"] == 0
        assert balancer["upstream_errors_502"] == 0
