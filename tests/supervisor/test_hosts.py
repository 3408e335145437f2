"""The host registry: the pure book, and the Redis side against a real redis-server."""

from __future__ import annotations

import asyncio

import pytest

from supervisor.hosts import HostBook, HostInfo, HostRegistryError, RedisHostRegistry
from tests.redis_server import RedisServer, redis_server_fixture

redis_server = redis_server_fixture(scope="module")


def test_book_tracks_joins_leaves_and_reachability() -> None:
    book = HostBook(me="a")
    joined, left = book.update([HostInfo("a", "10.0.0.1:80"), HostInfo("b", "10.0.0.2:80")], 1.0)
    assert (joined, left) == (["b"], [])
    assert book.address("b") == "10.0.0.2:80" and book.address("a") is None  # never to itself
    assert book.live_ids() == {"a", "b"}
    book.unreachable["b"] = "connection refused"
    assert book.reasons() == ["peer host b unreachable while its lease is live: "
                              "connection refused"]
    [me, peer] = book.status(3.0)
    assert me["self"] and not peer["self"] and peer["last_seen_s"] == 2.0
    assert not peer["reachable"]
    joined, left = book.update([HostInfo("a", "10.0.0.1:80")], 4.0)
    assert (joined, left) == ([], ["b"])
    assert book.reasons() == [] and book.address("b") is None


def test_registry_join_clash_takeover_and_leave(redis_server: RedisServer) -> None:
    async def main() -> None:
        url = redis_server.url
        a = RedisHostRegistry(url, "t1", "ha", "10.0.0.1:8000", lease_s=30)
        b = RedisHostRegistry(url, "t1", "hb", "10.0.0.2:8000", lease_s=0.6)
        await a.register(2, 5, first=True)
        await b.register(1, 0, first=True)
        seen = {h.id: h for h in await a.hosts()}
        assert set(seen) == {"ha", "hb"}
        assert (seen["ha"].advertise, seen["ha"].workers, seen["ha"].connections) == \
            ("10.0.0.1:8000", 2, 5)
        # another address with a live id: refused, naming who has it
        clash = RedisHostRegistry(url, "t1", "ha", "10.0.0.9:8000", lease_s=30)
        with pytest.raises(HostRegistryError, match=r"'ha'.*10\.0\.0\.1:8000"):
            await clash.register(first=True)
        # the same address again: a previous run that was killed; the new run takes over
        again = RedisHostRegistry(url, "t1", "ha", "10.0.0.1:8000", lease_s=30)
        await again.register(first=True)
        await a.deregister()  # the old run's nonce no longer owns the key: it stays
        assert {h.id for h in await b.hosts()} == {"ha", "hb"}
        # a host that stops renewing drops out when its lease expires
        await asyncio.sleep(0.8)
        assert {h.id for h in await again.hosts()} == {"ha"}
        # a clean stop leaves at once
        await again.deregister()
        assert await b.hosts() == []
        for r in (a, b, clash, again):
            await r.close()

    asyncio.run(main())
