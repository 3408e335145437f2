from __future__ import annotations

from worker.adapter.buffer import OutageBuffer


def test_fifo_peek_and_commit() -> None:
    buf = OutageBuffer(max_age_s=None, max_bytes=None)
    for i in range(5):
        assert buf.push(bytes([i]) * 10, None if i % 2 else "node", float(i))
    assert [q.frame[0] for q in buf.peek(3)] == [0, 1, 2]
    assert len(buf) == 5 and buf.bytes == 50
    buf.commit(3)
    assert [q.frame[0] for q in buf.peek(10)] == [3, 4]
    assert buf.bytes == 20


def test_byte_bound_refuses_newest_and_counts() -> None:
    buf = OutageBuffer(max_age_s=None, max_bytes=25)
    assert buf.push(b"a" * 10, None, 0)
    assert buf.push(b"b" * 10, None, 0)
    assert not buf.push(b"c" * 10, None, 0)
    assert buf.push(b"d" * 5, None, 0)  # a smaller one still fits
    assert [q.frame[:1] for q in buf.peek(10)] == [b"a", b"b", b"d"]
    assert (buf.overflowed, buf.overflowed_bytes, buf.bytes) == (1, 10, 25)


def test_age_bound_expires_oldest() -> None:
    buf = OutageBuffer(max_age_s=5, max_bytes=None)
    buf.push(b"old", None, 0.0)
    buf.push(b"mid", None, 3.0)
    buf.push(b"new", None, 6.0)
    assert buf.expire(6.0) == 1
    assert buf.expire(6.0) == 0
    assert [q.frame for q in buf.peek(5)] == [b"mid", b"new"]
    assert buf.expired == 1 and buf.bytes == 6


def test_zero_turns_bounds_off() -> None:
    buf = OutageBuffer(max_age_s=0, max_bytes=0)
    for _ in range(100):
        assert buf.push(b"x" * 1000, None, 0.0)
    assert buf.expire(1e9) == 0
    assert buf.overflowed == 0
