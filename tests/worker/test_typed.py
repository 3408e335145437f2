"""Typed events: conversion, error acks, and the decorator on a real server."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest
import socketio

from tests.worker.live_server import client, serve
from worker.typed import INVALID_PAYLOAD, PayloadError, registered, typed, typed_stats, validate


class Point(msgspec.Struct):
    x: int
    y: int


class ChatMessage(msgspec.Struct, forbid_unknown_fields=True):
    room: str
    text: str
    tags: list[str] = []
    at: Point | None = None


def error_of(payload: Any, model: Any) -> PayloadError:
    with pytest.raises(PayloadError) as info:
        validate(payload, model)
    return info.value


def test_valid_payload_becomes_the_model() -> None:
    msg = validate({"room": "r", "text": "hi", "at": {"x": 1, "y": 2}}, ChatMessage)
    assert msg == ChatMessage(room="r", text="hi", at=Point(1, 2))
    assert validate([1, 2, 3], list[int]) == [1, 2, 3]


def test_errors_carry_a_path() -> None:
    err = error_of({"room": "r", "text": 5}, ChatMessage)
    assert (err.detail, err.path) == ("Expected `str`, got `int`", "$.text")
    err = error_of({"room": "r", "text": "t", "tags": ["a", 2]}, ChatMessage)
    assert err.path == "$.tags[1]"
    err = error_of({"room": "r", "text": "t", "at": {"x": 1}}, ChatMessage)
    assert err.path == "$.at" and "`y`" in err.detail
    err = error_of("just a string", ChatMessage)
    assert (err.detail, err.path) == ("Expected `object`, got `str`", "$")
    assert error_of({"room": "r", "text": "t", "evil": 1}, ChatMessage).detail.startswith(
        "Object contains unknown field `evil`")


def test_conversion_is_strict() -> None:
    assert error_of({"x": "1", "y": 2}, Point).path == "$.x"


def test_the_ack_shape() -> None:
    assert PayloadError("Expected `str`, got `int`", "$.text").ack() == {
        "error": INVALID_PAYLOAD, "detail": "Expected `str`, got `int`", "path": "$.text"}


def test_pydantic_models_work_when_installed() -> None:
    import pydantic

    class Item(pydantic.BaseModel):  # type: ignore[name-defined,misc]
        name: str
        qty: list[int]

    assert validate({"name": "a", "qty": [1]}, Item).qty == [1]
    err = error_of({"name": "a", "qty": [1, "two"]}, Item)
    assert err.path == "$.qty[1]" and err.detail


def test_decorator_registers_a_validating_handler() -> None:
    sio = socketio.AsyncServer(async_mode="aiohttp")
    seen: list[Any] = []

    @typed(sio, "chat message", ChatMessage)
    async def on_chat(sid: str, msg: ChatMessage) -> dict[str, str]:
        seen.append(msg)
        return {"ok": msg.text}

    @typed(sio, "move", Point, namespace="/game")
    def on_move(sid: str, p: Point) -> int:  # sync handlers work too
        return p.x + p.y

    assert registered(sio) == {("/", "chat message"): ChatMessage, ("/game", "move"): Point}
    wrapper = sio.handlers["/"]["chat message"]

    async def run() -> None:
        assert await wrapper("sid", {"room": "r", "text": "hi"}) == {"ok": "hi"}
        assert (await wrapper("sid", {"room": "r"}))["path"] == "$"
        assert (await wrapper("sid", 1, 2))["detail"] == "expected one argument, got 2"
        assert await sio.handlers["/game"]["move"]("sid", {"x": 2, "y": 3}) == 5

    asyncio.run(run())
    assert seen == [ChatMessage("r", "hi")]
    assert on_chat.__name__ == "on_chat", "the decorator returns the handler itself"
    assert typed_stats(sio) == {"typed_invalid_payload": 2, "typed_ok": 2}
    assert typed_stats(socketio.AsyncServer()) == {"typed_invalid_payload": 0, "typed_ok": 0}


def test_over_a_real_connection() -> None:
    sio = socketio.AsyncServer(async_mode="aiohttp")

    @typed(sio, "chat message", ChatMessage)
    async def on_chat(sid: str, msg: ChatMessage) -> dict[str, Any]:
        return {"room": msg.room, "tags": msg.tags}

    @typed(sio, "blob", bytes)
    async def on_blob(sid: str, data: bytes) -> int:
        return len(data)

    async def run() -> None:
        async with serve(sio) as url, client(url) as c:
            ok = await c.call("chat message", {"room": "r", "text": "t", "tags": ["x"]},
                              timeout=5)
            assert ok == {"room": "r", "tags": ["x"]}
            bad = await c.call("chat message", {"room": ["r"], "text": "t"}, timeout=5)
            assert bad == {"error": INVALID_PAYLOAD, "detail": "Expected `str`, got `array`",
                           "path": "$.room"}
            assert await c.call("blob", b"\x00\x01\x02", timeout=5) == 3
            assert (await c.call("blob", 5, timeout=5))["error"] == INVALID_PAYLOAD

    asyncio.run(run())
