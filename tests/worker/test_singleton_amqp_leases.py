"""worker.singleton_amqp.AmqpLeases against a real RabbitMQ, without a cluster.

The rules the integration tests cannot reach on purpose: tokens grow by
tenure; a candidate's polls leave nothing behind (aio-pika keeps a callback of
every channel the broker closes, so the steady state must close none); two
candidates racing for a free lock end with one holder; a holder learns at once
when its connection goes.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc

from tests.rabbitmq_server import RabbitMQServer
from worker.singleton_amqp import AmqpLeases


def _leases(server: RabbitMQServer, channel: str, slot: int) -> AmqpLeases:
    return AmqpLeases(server.url, channel, slot=slot, generation=1, lease_s=1.0)


def test_tenures_tokens_and_release(rabbitmq_server: RabbitMQServer) -> None:
    async def main() -> None:
        a, b = _leases(rabbitmq_server, "t-tokens", 0), _leases(rabbitmq_server, "t-tokens", 1)
        granted, grant = await a.request("tick", 1, True)
        assert granted and grant is not None and grant.token == 1
        granted, seen = await b.request("tick", 1, True)
        assert not granted and seen == grant, "the other worker reads who holds it"
        assert await a.request("tick", 2, True) == (True, grant), "a renewal"
        await a.release("tick", 1)
        granted, grant2 = await b.request("tick", 2, True)
        assert granted and grant2 is not None and grant2.token == 2
        assert grant2.holder.slot == 1
        granted, _ = await a.request("tick", 3, False)
        assert not granted
        await b.release("tick", 2)
        await a.close()
        await b.close()

    asyncio.run(main())


def test_a_candidates_polls_leave_nothing_behind(rabbitmq_server: RabbitMQServer) -> None:
    async def main() -> None:
        a, b = _leases(rabbitmq_server, "t-churn", 0), _leases(rabbitmq_server, "t-churn", 1)
        assert (await a.request("tick", 1, True))[0]

        async def polls(n: int) -> None:
            for i in range(n):
                assert not (await b.request("tick", i, True))[0]
                assert (await a.request("tick", i, True))[0]

        await polls(200)  # warm-up
        gc.collect()
        tracemalloc.start()
        try:
            await polls(200)
            gc.collect()
            first = tracemalloc.get_traced_memory()[0]
            await polls(600)
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - first
        finally:
            tracemalloc.stop()
        # Before the candidate stopped declaring a held lock: about 7 KB per poll.
        assert grown < 150_000, f"{grown} bytes more after 600 more polls"
        await a.release("tick", 1)
        await a.close()
        await b.close()

    asyncio.run(main())


def test_racing_candidates_end_with_one_holder(rabbitmq_server: RabbitMQServer) -> None:
    async def main() -> None:
        for round_ in range(5):
            leases = [_leases(rabbitmq_server, f"t-race-{round_}", i) for i in range(4)]
            results = await asyncio.gather(*(x.request("tick", 1, True) for x in leases))
            assert sum(granted for granted, _ in results) == 1, results
            # The losers can still ask (a new connection if they lost the declare).
            again = await asyncio.gather(*(x.request("tick", 2, True) for x in leases))
            assert sum(granted for granted, _ in again) == 1, again
            for x, (granted, grant) in zip(leases, again, strict=True):
                if granted and grant is not None:
                    await x.release("tick", grant.token)  # (else close waits a lease)
                await x.close()

    asyncio.run(main())


def test_a_holder_hears_at_once_that_its_connection_closed(
    rabbitmq_server: RabbitMQServer,
) -> None:
    async def main() -> None:
        a, b = _leases(rabbitmq_server, "t-lost", 0), _leases(rabbitmq_server, "t-lost", 1)
        lost: list[str] = []
        a.set_lost_hook(lost.append)
        assert (await a.request("tick", 1, True))[0]
        connection = a._leases["tick"].connection  # the test's lever
        assert connection is not None
        await connection.close()  # as if the broker had restarted
        await asyncio.sleep(0.1)
        assert lost == ["tick"]
        granted, grant = await b.request("tick", 1, True)
        assert granted and grant is not None and grant.token == 2, "the lock was free at once"
        await b.release("tick", 2)
        await a.close()
        await b.close()

    asyncio.run(main())
