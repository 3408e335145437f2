"""The recovery store's decisions (worker/recovery/store.py), without sockets."""

from __future__ import annotations

from worker.recovery.store import Reason, RecoveryStore

A, B = (0, 1), (1, 1)


def store(window: float = 10.0, max_bytes: int = 1 << 20) -> RecoveryStore:
    return RecoveryStore(window, max_bytes, "ep")


def test_replays_what_the_session_missed_in_its_rooms_only() -> None:
    s = store()
    s.upsert(A, "p1", "sid1", "/", ("room",), b"data")
    e1 = s.append("/", ("room",), (), b"1", 0.0)
    s.append("/", ("other",), (), b"x", 0.0)
    s.append("/", (), (), b"all", 0.0)
    s.append("/", ("room",), ("room",), b"excluded", 0.0)
    s.append("/", ("sid1",), (), b"direct", 0.0)
    s.append("/chat", (), (), b"other nsp", 0.0)
    s.owner_gone(A, 1.0)
    result = s.restore("p1", s.offset(e1.seq), "/", B, 2.0)
    assert result.reason is None and result.session is not None
    assert [e.payload for e in result.missed] == [b"all", b"direct"]
    assert result.session.owner == B and result.session.data == b"data"
    assert s.recovered == 1 and s.replayed == 2


def test_trimmed_packets_mean_a_fresh_session_never_a_partial_replay() -> None:
    s = store(max_bytes=300)
    s.upsert(A, "p1", "sid1", "/", (), b"")
    first = s.append("/", (), (), b"a" * 100, 0.0)
    for _ in range(3):
        s.append("/", (), (), b"b" * 100, 0.0)
    assert s.trimmed_size >= 1
    s.closed(A, "p1", recoverable=True, now=1.0)
    assert s.restore("p1", s.offset(first.seq), "/", B, 1.5).reason is Reason.TRIMMED
    assert s.not_recovered[Reason.TRIMMED] == 1


def test_age_trim_and_expiry() -> None:
    s = store(window=5.0)
    s.upsert(A, "p1", "sid1", "/", (), b"")
    e = s.append("/", (), (), b"a", 0.0)
    s.closed(A, "p1", recoverable=True, now=1.0)
    assert s.restore("p1", s.offset(e.seq), "/", B, 7.0).reason is Reason.EXPIRED
    s.upsert(A, "p2", "sid2", "/", (), b"")
    s.closed(A, "p2", recoverable=True, now=1.0)
    s.trim(10.0)
    assert not s.log and "p2" not in s.sessions and s.trimmed_age == 1


def test_deliberate_disconnect_is_not_recoverable_and_bad_offsets_are_refused() -> None:
    s = store()
    s.upsert(A, "p1", "sid1", "/", (), b"")
    s.closed(A, "p1", recoverable=False, now=1.0)
    assert s.restore("p1", None, "/", B, 1.0).reason is Reason.UNKNOWN
    s.upsert(A, "p2", "sid2", "/", (), b"")
    s.owner_gone(A, 1.0)
    assert s.restore("p2", "other-1", "/", B, 1.0).reason is Reason.BAD_OFFSET
    assert s.restore("p2", "ep-99", "/", B, 1.0).reason is Reason.BAD_OFFSET
    assert s.restore("p2", None, "/chat", B, 1.0).reason is Reason.NAMESPACE


def test_no_offset_replays_everything_since_the_session_was_first_seen() -> None:
    s = store()
    s.append("/", (), (), b"before", 0.0)
    s.upsert(A, "p1", "sid1", "/", (), b"")
    s.append("/", (), (), b"after", 0.0)
    s.owner_gone(A, 1.0)
    result = s.restore("p1", None, "/", B, 1.0)
    assert [e.payload for e in result.missed] == [b"after"]


def test_a_stale_owner_cannot_overwrite_or_close_a_moved_session() -> None:
    s = store()
    s.upsert(A, "p1", "sid1", "/", ("r",), b"")
    assert s.restore("p1", None, "/", B, 1.0).reason is None  # recovered on B
    s.upsert(A, "p1", "sid1", "/", (), b"stale")
    s.closed(A, "p1", recoverable=False, now=2.0)
    assert s.sessions["p1"].owner == B and s.sessions["p1"].rooms == ("r",)


def test_offsets_compare_in_log_order_for_both_stores() -> None:
    from worker.recovery.agent import _order
    from worker.recovery.redis_store import stream_id

    assert stream_id("1700000000000-3") == (1700000000000, 3)
    assert stream_id("ep-3") is None and stream_id("12") is None
    assert _order("1700000000000-3") < _order("1700000000000-10") < _order("1700000000001-0")
    assert _order("a1b2c3d4-9") < _order("a1b2c3d4-10")
    assert _order("no offset") is None


def test_worker_totals_sum_the_redis_workers_counters() -> None:
    from supervisor.recovery import worker_totals

    totals = worker_totals([
        {"recovered": 3, "replayed": 10, "not_recovered/trimmed": 1, "delivered": 50,
         "degraded": 1, "appended": 5},
        {"recovered": 2, "not_recovered/trimmed": 2, "not_recovered/unknown": 1,
         "delivered": 70},
    ])
    assert totals["recovered"] == 5 and totals["replayed"] == 10
    assert totals["not_recovered"] == {"trimmed": 3, "unknown": 1}
    assert totals["delivered_max"] == 70 and totals["degraded_workers"] == 1
