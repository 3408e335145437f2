"""Emits from outside the cluster, end to end: python-socketio's own emitter.

Two worker processes on the ``redis`` backend (a real redis-server), clients
pinned to each, and a *separate process* running python-socketio's
``AsyncRedisManager(url, write_only=True)`` (``emitter_proc.py``).  Every
target client must get each message exactly once, and nobody else any.
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.integration.adapter_cluster import Client, Cluster, wait_for
from tests.redis_server import redis_server_factory

__all__ = ["redis_server_factory"]

pytestmark = pytest.mark.timeout(90)

EMITTER = Path(__file__).with_name("emitter_proc.py")
QUIET_S = 0.4


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def emit_from_another_process(kind: str, url: str, channel: str, *items: dict[str, Any]) -> None:
    out = subprocess.run(
        [sys.executable, str(EMITTER), kind, url, channel, json.dumps(list(items))],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert out.returncode == 0 and f"SENT {len(items)}" in out.stdout, out.stderr


@pytest.fixture(scope="module")
def cluster(redis_server_factory: Any) -> Iterator[Cluster]:
    server = redis_server_factory()
    c = Cluster("redis", 2, redis_url=server.url, extra=("--emitter-channel", "sio-ext"))
    c.redis = server  # type: ignore[attr-defined]
    try:
        c.start()
        run(c.wait_mesh())
        yield c
    finally:
        c.stop()


async def _close(*clients: Client) -> None:
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


def test_emit_to_all_a_room_and_skip_sid_reaches_each_client_once(cluster: Cluster) -> None:
    url = cluster.redis.url  # type: ignore[attr-defined]

    async def main() -> None:
        a = await cluster.client(0, auth={"rooms": ["red"]})
        b = await cluster.client(1, auth={"rooms": ["red"]})
        c = await cluster.client(1)
        d = await cluster.client(0)
        chat = await cluster.client(1, namespaces=["/chat"])
        everyone = (a, b, c, d)
        try:
            await asyncio.to_thread(
                emit_from_another_process, "redis", url, "sio-ext",
                {"event": "fanout", "data": 42},
                {"event": "red", "data": {"n": 1}, "room": "red"},
                {"event": "red_but_b", "data": "x", "room": "red", "skip_sid": b.sid()},
                {"event": "to_c", "data": [1, "two"], "multi": True, "to": c.sid()},
                {"event": "chat", "data": "hi", "namespace": "/chat"},
                {"event": "all_but", "data": 0, "skip_sid": [a.sid(), c.sid()]},
            )
            await wait_for(lambda: all(x.got("fanout") for x in everyone))
            await wait_for(lambda: chat.got("chat", "/chat") and c.got("to_c")
                           and d.got("all_but"))
            await asyncio.sleep(QUIET_S)
            for x in everyone:
                assert x.got("fanout") == [42]
            assert a.got("red") == b.got("red") == [{"n": 1}]
            assert c.got("red") == d.got("red") == []
            assert a.got("red_but_b") == ["x"]
            assert b.got("red_but_b") == c.got("red_but_b") == d.got("red_but_b") == []
            assert c.got("to_c") == [[1, "two"]]
            assert a.got("to_c") == b.got("to_c") == d.got("to_c") == []
            assert chat.got("chat", "/chat") == ["hi"]
            assert all(x.got("chat") == [] for x in everyone)
            assert b.got("all_but") == d.got("all_but") == [0]
            assert a.got("all_but") == c.got("all_but") == []
            statuses = [await cluster.op(w.slot, "status") for w in cluster.workers]
            assert [s["emits"]["redis-emitter"] for s in statuses] == [6, 6]
            # The sync RedisManager(write_only=True) publishes the same format.
            await asyncio.to_thread(
                emit_from_another_process, "redis-sync", url, "sio-ext",
                {"event": "sync", "data": "s", "room": "red", "skip_sid": a.sid()})
            await wait_for(lambda: b.got("sync") == ["s"])
            await asyncio.sleep(QUIET_S)
            assert a.got("sync") == c.got("sync") == d.got("sync") == []
            assert all(s["external"]["redis-emitter"]["state"] == "connected" for s in statuses)
        finally:
            await _close(*everyone, chat)

    run(main())


class _Boom:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (os.system, (f"touch {self.path}",))


def test_pickled_messages_are_refused_and_counted(cluster: Cluster, tmp_path: Path) -> None:
    url = cluster.redis.url  # type: ignore[attr-defined]
    marker = tmp_path / "pwned"

    async def main() -> None:
        a = await cluster.client(0)
        b = await cluster.client(1)
        try:
            before = [await cluster.op(w.slot, "status") for w in cluster.workers]
            # What python-socketio < 5 published: pickle.dumps(message).
            message = {"method": "emit", "event": "evil", "data": _Boom(str(marker)),
                       "namespace": "/", "room": None, "skip_sid": None, "callback": None}
            client = redis.Redis.from_url(url)
            try:
                assert client.publish("sio-ext", pickle.dumps(message)) == 2
                assert client.publish("sio-ext", b"{not json") == 2
            finally:
                client.close()
            await asyncio.to_thread(emit_from_another_process, "redis", url, "sio-ext",
                                    {"event": "after", "data": 1})
            await wait_for(lambda: a.got("after") and b.got("after"))
            assert a.got("evil") == b.got("evil") == []
            assert not marker.exists()
            for w, old in zip(cluster.workers, before, strict=True):
                status = await cluster.op(w.slot, "status")
                refused = status["external_refused"]
                old_refused = old["external_refused"]
                assert refused.get("redis-emitter/pickle", 0) == \
                    old_refused.get("redis-emitter/pickle", 0) + 1
                assert refused.get("redis-emitter/malformed", 0) == \
                    old_refused.get("redis-emitter/malformed", 0) + 1
        finally:
            await _close(a, b)

    run(main())
