"""Frames out and in: sequence numbers per stream, counts, and what is dropped.  No sockets."""

from __future__ import annotations

from tests.worker.adapter.outbox import Outbox
from worker.adapter.envelope import Codec, Envelope, MsgType, serialize
from worker.adapter.wire import Wire


def test_each_stream_is_numbered_apart_and_heartbeats_are_not() -> None:
    out = Outbox()
    wire = Wire(out, Codec.MSGPACK)
    wire.send(MsgType.BROADCAST, "/", ["a", [], 0])
    wire.send(MsgType.BROADCAST, "/", ["b", [], 0])
    wire.send(MsgType.ACK, "/", [1, []], to="1.2")
    wire.send(MsgType.HEARTBEAT, "/", None, sequenced=False, bufferable=False)
    assert [(to, env.seq) for to, _, env in out.frames] == [
        (None, 1), (None, 2), ("1.2", 1), (None, 0)]
    assert out.frames[-1][1] is False  # a heartbeat is never buffered
    assert (wire.sent, wire.heartbeats_sent) == (3, 1)


def test_one_room_goes_on_its_channel_with_dynamic_rooms() -> None:
    out = Outbox(dynamic_rooms=True)
    wire = Wire(out, Codec.JSON)
    wire.send(MsgType.BROADCAST, "/", ["a", [], 0], rooms=("lobby",))
    wire.send(MsgType.BROADCAST, "/", ["b", [], 0], rooms=("lobby", "hall"))
    assert [(key, env.seq) for key, env in out.rooms] == [("r#/#slobby", 1)]
    assert [env.seq for _, _, env in out.frames] == [1]


def _frame(node: str, seq: int, to: str | None = None,
           kind: MsgType = MsgType.BROADCAST) -> bytes:
    return serialize(Envelope(kind, node, "/", ["e", [], 0], seq=seq, to=to))


def test_accept_drops_our_own_other_nodes_and_repeats() -> None:
    wire = Wire(Outbox(), Codec.MSGPACK)
    assert wire.accept(_frame("0.1", 1)) is None  # our own, echoed
    assert wire.accept(_frame("1.2", 1, to="2.3")) is None  # for another node
    parsed = wire.accept(_frame("1.2", 1))
    assert parsed is not None and parsed.header.node == "1.2"
    assert wire.accept(_frame("1.2", 1)) is None  # a repeat
    assert wire.accept(_frame("1.2", 1, to="0.1")) is not None  # directed: its own stream
    assert wire.accept(_frame("1.2", 0, kind=MsgType.HEARTBEAT)) is not None
    assert (wire.received, wire.heartbeats_received, wire.dedupe.duplicates) == (2, 1, 1)
