from __future__ import annotations

from worker.adapter.peers import PeerTable


def test_seen_expire_forget() -> None:
    table = PeerTable("me", timeout_s=3)
    assert table.seen("a", 0.0)
    assert not table.seen("a", 1.0)
    assert table.seen("b", 2.0)
    assert not table.seen("me", 2.0)
    assert table.live() == {"a", "b"}
    assert table.expire(4.5) == ["a"]
    assert "a" not in table and "b" in table
    assert table.forget("b") and not table.forget("b")
    assert len(table) == 0


def test_freeze_stops_expiry_and_thaw_restarts_clocks() -> None:
    table = PeerTable("me", timeout_s=1)
    table.seen("a", 0.0)
    table.freeze()
    assert table.expire(100.0) == []
    table.thaw(100.0)
    assert table.expire(100.5) == []
    assert table.expire(101.5) == ["a"]
