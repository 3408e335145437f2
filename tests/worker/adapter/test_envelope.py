from __future__ import annotations

import pytest

from worker.adapter.envelope import (
    PREFIX_BYTES,
    Codec,
    Envelope,
    MsgType,
    check,
    parse,
    parse_header,
    serialize,
)
from worker.adapter.exceptions import EncodingError, ProtocolError, UnsupportedVersion

CODECS = [Codec.MSGPACK, Codec.JSON]


def broadcast(data: object = None, **kw: object) -> Envelope:
    fields: dict[str, object] = {"rooms": ("r1", 7), "exclude": ("sid",), "seq": 3}
    fields.update(kw)
    return Envelope(MsgType.BROADCAST, "0.1", "/chat", data, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("codec", CODECS)
def test_round_trip(codec: Codec) -> None:
    env = broadcast(["event", [1, "two", {"three": [3.5, None, True]}], 0])
    assert parse(serialize(env, codec)) == env


@pytest.mark.parametrize("codec", CODECS)
def test_binary_survives_at_any_depth(codec: Codec) -> None:
    data = ["ev", [b"\x00\xff", {"k": [b"", b"abc"], "_placeholder": 1}], 0]
    assert parse(serialize(broadcast(data), codec)).data == data


def test_json_placeholder_lookalike_is_not_binary() -> None:
    data = {"_placeholder": True, "num": 0, "extra": 1}
    assert parse(serialize(broadcast(data), Codec.JSON)).data == data


@pytest.mark.parametrize("codec", CODECS)
def test_header_is_decoded_without_the_body(codec: Codec) -> None:
    frame = serialize(broadcast(["ev", ["payload"], 0]), codec)
    header_end = PREFIX_BYTES + int.from_bytes(frame[2:PREFIX_BYTES], "big")
    corrupt = frame[:header_end] + b"\xc1\xc1 not a body"
    parsed = parse_header(corrupt)
    assert parsed.header.rooms == ("r1", 7)
    assert parsed.type == MsgType.BROADCAST
    with pytest.raises(ProtocolError):
        parsed.data()


def test_codecs_are_self_describing() -> None:
    env = broadcast([b"x"])
    assert parse(serialize(env, Codec.JSON)) == parse(serialize(env, Codec.MSGPACK))


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        (b"\x01m", ProtocolError),
        (b"\x02m\x00\x00\x00\x00", UnsupportedVersion),
        (b"\x01z\x00\x00\x00\x00", ProtocolError),
        (b"\x01m\x00\x00\x00\xff\x90", ProtocolError),
        (b"\x01m\x00\x00\x00\x01\xc1", ProtocolError),
    ],
)
def test_malformed_frames(frame: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_header(frame)


def test_unknown_type_and_missing_node() -> None:
    frame = bytearray(serialize(Envelope(MsgType.HEARTBEAT, "n")))
    frame[PREFIX_BYTES + 1] = 99  # msgpack array: first element is the type
    with pytest.raises(ProtocolError, match="unknown message type"):
        parse_header(bytes(frame))


def test_size_limit() -> None:
    frame = serialize(broadcast("x" * 100))
    with pytest.raises(ProtocolError, match="exceeds"):
        parse_header(frame, max_size=50)
    parse_header(frame, max_size=len(frame))


@pytest.mark.parametrize(
    "env",
    [
        Envelope(MsgType.ACK, "n", data=[1, []]),  # directed without destination
        Envelope(MsgType.FETCH_REQ, "n"),  # request without id
        Envelope(MsgType.HEARTBEAT, ""),
        Envelope(MsgType.HEARTBEAT, "n", "chat"),
        Envelope(MsgType.HEARTBEAT, "n", seq=-1),
    ],
)
def test_check_rejects_inconsistent_envelopes(env: Envelope) -> None:
    with pytest.raises(ProtocolError):
        check(env)
    with pytest.raises(ProtocolError):
        serialize(env)


def test_check_version() -> None:
    with pytest.raises(UnsupportedVersion):
        check(Envelope(MsgType.HEARTBEAT, "n", v=9))


def test_unencodable_data_is_a_local_error() -> None:
    with pytest.raises(EncodingError):
        serialize(broadcast(object()))
    with pytest.raises(EncodingError):
        serialize(broadcast(object()), Codec.JSON)
