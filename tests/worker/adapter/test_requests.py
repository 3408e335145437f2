from __future__ import annotations

import asyncio

from worker.adapter.requests import RequestTable


def test_completes_when_every_expected_peer_replied() -> None:
    async def main() -> None:
        table = RequestTable()
        rid, pending = table.open({"a", "b"})
        assert not table.reply(rid, "c", 0)  # not asked
        assert not table.reply(rid, "a", 1)
        assert not table.reply(rid, "a", 9)  # duplicate
        assert table.reply(rid, "b", 2)
        assert await pending.future == {"a": 1, "b": 2}
        assert len(table) == 0
        assert not table.reply(rid, "b", 3)  # late

    asyncio.run(main())


def test_dead_peer_completes_without_it() -> None:
    async def main() -> None:
        table = RequestTable()
        rid, pending = table.open({"a", "b"})
        _other, _ = table.open({"b"})
        table.reply(rid, "a", 1)
        assert table.peer_gone("b") == 2
        assert await pending.future == {"a": 1}
        assert pending.lost == {"b"}

    asyncio.run(main())


def test_no_peers_resolves_at_once_and_abandon_returns_partial() -> None:
    async def main() -> None:
        table = RequestTable()
        _, empty = table.open(frozenset())
        assert empty.future.done() and len(table) == 0
        rid, _pending = table.open({"a", "b"})
        table.reply(rid, "a", 1)
        left = table.abandon(rid)
        assert left is not None and left.replies == {"a": 1} and left.expected == {"b"}
        assert table.abandon(rid) is None
        _, cancelled = table.open({"z"})
        table.cancel_all()
        assert cancelled.future.cancelled()

    asyncio.run(main())
