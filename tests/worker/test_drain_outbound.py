"""The drain's close plan (worker/drain.py) and the outbound byte cap (worker/outbound.py)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from worker.drain import SessionFacts, close_spread, due_times, may_close
from worker.outbound import PACKET_OVERHEAD, OutboundQueue


def test_due_times_spread_evenly() -> None:
    assert due_times(4, 10.0, 2.0) == [10.0, 10.5, 11.0, 11.5]
    assert due_times(3, 10.0, 0.0) == [10.0, 10.0, 10.0]
    assert due_times(0, 10.0, 2.0) == []


def test_never_mid_upgrade_nor_a_fresh_polling_session_until_the_deadline() -> None:
    upgrading = SessionFacts(upgrading=True, upgraded=False, age_s=10.0)
    fresh_polling = SessionFacts(upgrading=False, upgraded=False, age_s=0.5)
    old_polling = SessionFacts(upgrading=False, upgraded=False, age_s=5.0)
    websocket = SessionFacts(upgrading=False, upgraded=True, age_s=0.1)
    assert not may_close(upgrading, 1.0, 5.0)
    assert not may_close(fresh_polling, 1.0, 5.0)
    assert may_close(old_polling, 1.0, 5.0)
    assert may_close(websocket, 1.0, 5.0)
    assert may_close(upgrading, 5.0, 5.0)  # the deadline wins: a drain always ends


def test_close_spread_waits_for_an_upgrade_then_closes_everyone() -> None:
    async def main() -> tuple[list[str], float]:
        queue = SimpleNamespace(created=0.0)
        socks: dict[str, Any] = {
            "a": SimpleNamespace(upgrading=False, upgraded=True, closed=False, queue=queue),
            "b": SimpleNamespace(upgrading=True, upgraded=False, closed=False, queue=queue),
        }
        order: list[str] = []

        async def close(sid: str) -> None:
            order.append(sid)

        async def finish_upgrade() -> None:
            await asyncio.sleep(0.2)
            socks["b"].upgrading, socks["b"].upgraded = False, True

        loop = asyncio.get_running_loop()
        started = loop.time()
        upgrade = asyncio.create_task(finish_upgrade())
        closed = await close_spread(socks, close, spread_s=0.1, upgrade_grace_s=2.0)
        await upgrade
        assert closed == 2
        return order, loop.time() - started

    order, took = asyncio.run(main())
    assert order == ["a", "b"]
    assert 0.2 <= took < 1.0, took


def test_outbound_queue_caps_bytes_and_reports_once() -> None:
    async def main() -> None:
        overflowed: list[OutboundQueue] = []
        q = OutboundQueue(3 * (100 + PACKET_OVERHEAD), overflowed.append)
        pkt = SimpleNamespace(data="x" * 100)
        for _ in range(3):
            q.put_nowait(pkt)
        assert q.bytes == 3 * (100 + PACKET_OVERHEAD) and not overflowed
        got = await q.get()
        q.task_done()
        assert got is pkt and q.bytes == 2 * (100 + PACKET_OVERHEAD)
        q.put_nowait(pkt)
        q.put_nowait(pkt)  # over the cap: everything is dropped, once
        q.put_nowait(pkt)
        assert overflowed == [q] and q.empty() and q.bytes == 0
        q.put_nowait(None)  # the writer's exit sentinel still goes through
        assert await q.get() is None

    asyncio.run(main())


def test_outbound_queue_hands_packets_to_waiters_in_order() -> None:
    """What python-engineio does with it: ``wait_for(queue.get(), timeout)``, then
    ``get_nowait`` for the rest, ``task_done`` for each, and ``join`` on close."""

    async def main() -> None:
        q = OutboundQueue(0, lambda _: None)
        got: list[Any] = []

        async def writer() -> None:
            while True:
                first = await asyncio.wait_for(q.get(), 5)
                q.task_done()
                batch = [first]
                while not q.empty():
                    batch.append(q.get_nowait())
                    q.task_done()
                got.extend(batch)
                if batch[-1] is None:
                    return

        task = asyncio.create_task(writer())
        await asyncio.sleep(0)  # the writer now waits on a Future
        for i in range(5):
            q.put_nowait(SimpleNamespace(data=str(i)))
        await asyncio.sleep(0)
        q.put_nowait(SimpleNamespace(data="5"))
        await q.put(None)
        await asyncio.wait_for(q.join(), 1)
        await task
        assert [p.data for p in got[:-1]] == [str(i) for i in range(6)] and got[-1] is None
        assert q.bytes == 0 and q.qsize() == 0

    asyncio.run(main())


def test_outbound_queue_skips_a_wait_that_timed_out() -> None:
    async def main() -> None:
        q = OutboundQueue(0, lambda _: None)
        try:
            await asyncio.wait_for(q.get(), 0.01)
        except TimeoutError:
            pass
        else:
            raise AssertionError("expected a timeout")
        pkt = SimpleNamespace(data="x")
        q.put_nowait(pkt)  # not given to the cancelled wait: still queued
        assert q.qsize() == 1
        assert await asyncio.wait_for(q.get(), 1) is pkt
        q.task_done()
        await asyncio.wait_for(q.join(), 1)

    asyncio.run(main())
