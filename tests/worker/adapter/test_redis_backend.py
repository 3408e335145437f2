"""The redis backend against a real redis-server, killed and restarted in the middle."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tests.redis_server import RedisServer, redis_server_factory
from tests.worker.adapter.events import Recorder, frame, until
from worker.adapter.redis_backend import RedisTransport
from worker.adapter.transport import AdapterState

__all__ = ["redis_server_factory"]

pytestmark = pytest.mark.timeout(60)

Factory = Callable[..., RedisServer]


def transport(url: str, slot: int, **kw: object) -> RedisTransport:
    options: dict[str, object] = {"outage_buffer_s": 30.0, "outage_buffer_bytes": 1 << 20}
    options.update(kw)
    return RedisTransport(url, "t", slot, 1, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("sharded", [True, False, None])
def test_broadcast_and_directed(redis_server_factory: Factory, sharded: bool | None) -> None:
    server = redis_server_factory()

    async def main() -> None:
        a, b = transport(server.url, 0, sharded=sharded), transport(server.url, 1, sharded=sharded)
        ea, eb = Recorder(), Recorder()
        await a.start(ea)
        await b.start(eb)
        assert a.state == AdapterState.CONNECTED
        assert a.sharded is (True if sharded is None else sharded)  # the server is Redis 7
        for i in range(50):
            a.send(frame(a.node, i, seq=i + 1), None)
        a.send(frame(a.node, b"\x00bin", to=b.node), b.node)
        a.send(frame(a.node, "nobody", to="gone"), "gone")
        await until(lambda: len(eb.frames) == 51)
        assert eb.data() == [*range(50), b"\x00bin"]
        assert ea.data(b.node) == []  # a's own broadcasts come back to a; b sent nothing
        await until(lambda: a.status().undeliverable_remote == 1)
        await a.close()
        await b.close()

    asyncio.run(main())


def test_outage_buffers_in_order_and_counts_overflow(redis_server_factory: Factory) -> None:
    server = redis_server_factory()

    async def main() -> None:
        a = transport(server.url, 0, outage_buffer_bytes=2000, backoff_max_s=0.2)
        b = transport(server.url, 1, backoff_max_s=0.2)
        ea, eb = Recorder(), Recorder()
        await a.start(ea)
        await b.start(eb)
        a.send(frame(a.node, "before", seq=1), None)
        await until(lambda: eb.data() == ["before"])

        server.kill()
        await until(lambda: a.state == AdapterState.DEGRADED)
        for i in range(40):
            a.send(frame(a.node, f"during-{i}-" + "x" * 100, seq=i + 2), None)
        a.send(frame(a.node, "hb"), None, bufferable=False)  # heartbeats are not kept
        status = a.status()
        fitted = status.buffered
        assert 0 < fitted < 40
        assert status.overflowed == 40 - fitted
        assert status.buffered_bytes <= 2000

        server.start()
        await until(lambda: a.state == b.state == AdapterState.CONNECTED, 10)
        await until(lambda: len(eb.frames) == 1 + fitted, 10)
        expected = [f"during-{i}-" + "x" * 100 for i in range(fitted)]
        assert eb.data() == ["before", *expected]
        assert b.status().transport_errors >= 1
        assert ea.states.count(AdapterState.DEGRADED) == 1
        assert a.status().reconnects == 1
        await a.close()
        await b.close()

    asyncio.run(main())


def test_outage_age_bound(redis_server_factory: Factory) -> None:
    server = redis_server_factory()

    async def main() -> None:
        a, ea = transport(server.url, 0, outage_buffer_s=0.2, backoff_max_s=0.2), Recorder()
        await a.start(ea)
        server.kill()
        await until(lambda: a.state == AdapterState.DEGRADED)
        a.send(frame(a.node, "stale", seq=1), None)
        await asyncio.sleep(0.8)
        assert a.status().expired == 1 and a.status().buffered == 0
        server.start()
        await until(lambda: a.state == AdapterState.CONNECTED, 10)
        await a.close()

    asyncio.run(main())


def test_start_without_redis_is_degraded_then_recovers(redis_server_factory: Factory) -> None:
    server = redis_server_factory()
    server.kill()

    async def main() -> None:
        a = transport(server.url, 0, start_timeout_s=0.3, backoff_max_s=0.2)
        ea = Recorder()
        await a.start(ea)
        assert a.state == AdapterState.DEGRADED
        a.send(frame(a.node, "queued", seq=1), None)
        server.start()
        await until(lambda: a.state == AdapterState.CONNECTED, 10)
        await until(lambda: a.status().buffered == 0)
        await a.close()

    asyncio.run(main())
