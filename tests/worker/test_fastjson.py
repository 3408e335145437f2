"""worker/fastjson.py answers as engineio.json does, and the worker installs it
only where the app kept the default JSON module (worker/libcontract.install_json).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import engineio.json
import engineio.packet
import pytest
import socketio
import socketio.packet

from worker import fastjson, libcontract

COMPACT = (",", ":")

TEXTS = [
    '["echo","x"]', '["echo",{"a":[1,2.5,null,true,false]},-7]', '"héllo ✓ 日本語 🎉"',
    '"\\u00e9\\u2713\\ud83c\\udf89"', '{"a":1,"a":2}', ' [1 , 2] ', "1e5", "-0", "0.1",
    "1" * 100, '["' + "9" * 200 + '"]', '"\\ud800"', "NaN", "[Infinity,-Infinity]", "[1e400]",
    '{"_placeholder":true,"num":0}', "123456789012345678901234567890",
]
BAD_TEXTS = ["", " ", "[1,", "{'a':1}", "\ufeff[]", "[1]x", "1" * 101, "[" + "2" * 150 + "]"]


@pytest.mark.parametrize("text", TEXTS)
def test_loads_gives_what_engineio_json_gives(text: str) -> None:
    expected = engineio.json.loads(text)
    got = fastjson.loads(text)
    if isinstance(expected, float) and math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == expected and type(got) is type(expected)
    assert fastjson.loads(text.encode("utf-8", "surrogatepass")) is not None or expected is None


@pytest.mark.parametrize("text", BAD_TEXTS)
def test_loads_refuses_what_engineio_json_refuses_with_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        engineio.json.loads(text)
    with pytest.raises(ValueError):
        fastjson.loads(text)


VALUES: list[Any] = [
    ["echo", "x" * 64], {"text": "héllo ✓ 日本語 🎉", "n": [1, None, True, 2.5]}, [], {},
    {"_placeholder": True, "num": 0}, [2**63 - 1, -(2**63)], {1: "int key"}, (1, 2),
    "\u2028\u2029", "quote \" backslash \\ control \x01",
]


@pytest.mark.parametrize("value", VALUES)
def test_dumps_round_trips_to_the_same_value(value: Any) -> None:
    text = fastjson.dumps(value, separators=COMPACT)
    assert json.loads(text) == json.loads(json.dumps(value))


def test_dumps_falls_back_where_msgspec_refuses_or_the_call_is_not_a_packet() -> None:
    assert fastjson.dumps("\ud800", separators=COMPACT) == json.dumps("\ud800")
    assert fastjson.dumps(10**30, separators=COMPACT) == str(10**30)
    assert fastjson.dumps({"a": 1}) == json.dumps({"a": 1})  # default separators
    assert fastjson.dumps({"a": 1}, indent=2) == json.dumps({"a": 1}, indent=2)
    with pytest.raises(TypeError):
        fastjson.dumps(object(), separators=COMPACT)


def test_the_documented_differences_are_what_javascript_writes() -> None:
    assert fastjson.dumps("é✓", separators=COMPACT) == '"é✓"'
    assert fastjson.dumps([math.nan, math.inf], separators=COMPACT) == "[null,null]"


def test_socketio_packets_with_binary_and_non_ascii_survive_the_swap(
        default_json: None) -> None:
    sio = socketio.AsyncServer(async_mode="aiohttp")
    assert libcontract.install_json(sio, fastjson)
    data = ["echo", {"text": "héllo ✓", "bytes": b"\x00\x01\xfe\xff"}]
    encoded = socketio.packet.Packet(socketio.packet.EVENT, data=data, id=3).encode()
    assert isinstance(encoded, list) and encoded[1] == b"\x00\x01\xfe\xff"
    decoded = socketio.packet.Packet(encoded_packet=encoded[0])
    assert decoded.attachment_count == 1
    decoded.add_attachment(encoded[1])
    assert decoded.data == data and decoded.id == 3
    text = socketio.packet.Packet(socketio.packet.EVENT, data=["é", 1]).encode()
    assert text == '2["é",1]'
    # engineio decodes a message that looks like JSON, whichever module it holds
    assert engineio.packet.Packet(encoded_packet='4{"a":"é"}').data == {"a": "é"}


@pytest.fixture
def default_json() -> Iterator[None]:
    """Put the default JSON module back on the packet classes after the test."""
    holders = (socketio.packet.Packet, engineio.packet.Packet)
    saved = [h.json for h in holders]
    for holder in holders:
        holder.json = engineio.json
    try:
        yield
    finally:
        for holder, module in zip(holders, saved, strict=True):
            holder.json = module


def test_install_json_replaces_only_the_default(default_json: None) -> None:
    sio = socketio.AsyncServer(async_mode="aiohttp")
    assert libcontract.install_json(sio, fastjson)
    assert socketio.packet.Packet.json is fastjson
    assert engineio.packet.Packet.json is fastjson


def test_install_json_leaves_an_app_that_chose_its_json_alone(default_json: None) -> None:
    sio = socketio.AsyncServer(async_mode="aiohttp", json=json)
    assert not libcontract.install_json(sio, fastjson)
    assert socketio.packet.Packet.json is json
    assert engineio.packet.Packet.json is json
