"""The cluster core, end to end, with python-socketio's own client."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import socketio

from tests.clients import disconnect
from tests.cluster import start_cluster
from tests.waiting import eventually


async def _session(url: str, transports: list[str] | None, n: int) -> dict[str, Any]:
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(url, transports=transports, wait_timeout=10)
    try:
        who = await client.call("whoami", timeout=10)
        for i in range(n):
            assert await client.call("echo", {"i": i, "b": b"\x00\x01"}, timeout=10) == {
                "i": i, "b": b"\x00\x01"}
        assert await client.call("echo", ("a", 2), timeout=10) == ["a", 2]
        return {"pid": who["pid"], "transport": client.transport(), **who}
    finally:
        await disconnect(client)


@pytest.mark.parametrize(("transports", "mode"), [
    (None, "handoff"), (None, "tunnel"), (["polling"], "handoff"), (["websocket"], "handoff"),
    (["websocket"], "tunnel"),
])
def test_many_clients_events_and_acks(tmp_path: Path, transports: list[str] | None,
                                      mode: str) -> None:
    with start_cluster(workers=2, tmp_path=tmp_path, args=("--websocket", mode)) as cluster:
        pids = {w["pid"] for w in cluster.ready_workers()}

        async def main() -> list[dict[str, Any]]:
            return await asyncio.gather(*(_session(cluster.url, transports, 5)
                                          for _ in range(40)))

        results = asyncio.run(main())
        assert {r["pid"] for r in results} == pids, "sessions should spread over both workers"
        expected = "polling" if transports == ["polling"] else "websocket"
        assert {r["transport"] for r in results} == {expected}
        assert all(r["remote"] == "127.0.0.1" for r in results)
        assert {r["host"] for r in results} == {f"127.0.0.1:{cluster.port}"}
        status = cluster.status()
        assert status["balancer"]["session_unknown_400"] == 0
        assert status["balancer"]["upstream_errors_502"] == 0
        _code, metrics = cluster.admin("/metrics")
        assert 'siocluster_workers{state="ready"} 2.0' in metrics
        assert 'siocluster_proxy_request_seconds_bucket{kind="handshake",le="+Inf"}' in metrics
        assert "siocluster_messages_received_total" in metrics
        if expected == "websocket":
            # The master's upgrades, and those of sessions whose polling connection
            # it had passed to their worker (worker/gate.py; only in handoff mode).
            upgrades = status["balancer"]["upgrades"]

            def in_gates() -> int:
                return sum(w.get("gate", {}).get("upgrades", 0)
                           for w in cluster.status()["workers"])

            if upgrades < 40:
                eventually(lambda: upgrades + in_gates() >= 40, what="40 upgrades")
            assert upgrades + in_gates() >= 40
            assert status["balancer"]["handoffs"] == (upgrades if mode == "handoff" else 0)
            if mode == "tunnel":
                assert in_gates() == 0
