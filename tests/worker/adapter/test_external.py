"""The parser of python-socketio's pub/sub messages (pure: no broker).

The messages are produced by python-socketio's own ``AsyncPubSubManager.emit``
with ``write_only=True``: only its ``_publish`` (the broker write) is replaced
by a list, so the wire format under test is exactly the library's.
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from socketio.async_pubsub_manager import AsyncPubSubManager

from worker.adapter.external import (
    ExternalClose,
    ExternalEmit,
    ExternalRooms,
    Refused,
    parse_message,
)


class _Capture(AsyncPubSubManager):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__(write_only=True)
        self.published: list[bytes] = []

    async def _publish(self, data: Any) -> None:
        self.published.append(self.json.dumps(data).encode())


def wire(**emit: Any) -> bytes:
    manager = _Capture()
    event = emit.pop("event", "ev")
    data = emit.pop("data", None)
    asyncio.run(manager.emit(event, data, **emit))
    (raw,) = manager.published
    return raw


def test_emit_to_all() -> None:
    op = parse_message(wire(event="fanout", data=42))
    assert op == ExternalEmit("fanout", (42,), "/", (), ())


def test_room_namespace_skip_sid_and_to() -> None:
    op = parse_message(wire(data={"a": 1}, room="r", namespace="/chat", skip_sid="s1"))
    assert op == ExternalEmit("ev", ({"a": 1},), "/chat", ("r",), ("s1",))
    op = parse_message(wire(data="x", to=["r1", "r2"], skip_sid=["a", "b"]))
    assert op == ExternalEmit("ev", ("x",), "/", ("r1", "r2"), ("a", "b"))


def test_several_arguments_and_none() -> None:
    assert parse_message(wire(data=(1, "two"))) == ExternalEmit("ev", (1, "two"), "/", (), ())
    # python-socketio's receivers send emit(event, None) as no argument at all.
    assert parse_message(wire(data=None)) == ExternalEmit("ev", (), "/", (), ())
    assert parse_message(wire(data=(None, None))) == ExternalEmit("ev", (None, None), "/", (), ())


def test_binary_attachments_are_rebuilt() -> None:
    op = parse_message(wire(data={"blob": b"\x00\xffbytes", "n": [b"x"]}))
    assert isinstance(op, ExternalEmit)
    assert op.args == ({"blob": b"\x00\xffbytes", "n": [b"x"]},)


def test_room_operations() -> None:
    def published(coro_factory: Any) -> bytes:
        manager = _Capture()
        asyncio.run(coro_factory(manager))
        return manager.published[-1]

    raw = published(lambda m: m.enter_room("sid1", "/", "lobby"))
    assert parse_message(raw) == ExternalRooms("enter_room", "sid1", "/", "lobby")
    raw = published(lambda m: m.leave_room("sid1", "/x", "lobby"))
    assert parse_message(raw) == ExternalRooms("leave_room", "sid1", "/x", "lobby")
    raw = json.dumps({"method": "disconnect", "sid": "s", "namespace": "/"}).encode()
    assert parse_message(raw) == ExternalRooms("disconnect", "s", "/", None)
    raw = json.dumps({"method": "close_room", "room": "r", "namespace": None}).encode()
    assert parse_message(raw) == ExternalClose("r", "/")


def test_callbacks_for_other_servers_are_ignored() -> None:
    raw = json.dumps({"method": "callback", "host_id": "h", "sid": "s", "id": 1, "args": []})
    assert parse_message(raw.encode()) is None


class _Boom:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (os.system, (f"touch {self.path}",))


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_is_refused_never_unpickled(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "pwned"
    message = {"method": "emit", "event": "e", "data": [_Boom(str(marker))], "namespace": "/"}
    op = parse_message(pickle.dumps(message, protocol=protocol))
    assert isinstance(op, Refused)
    assert op.reason in ("pickle", "malformed")
    if protocol >= 2:
        assert op.reason == "pickle"
    assert not marker.exists()


@pytest.mark.parametrize(
    "raw",
    [
        b"", b"not json", b"[]", b'{"no": "method"}', b'{"method": 3}',
        b'{"method": "emit", "event": "", "data": []}',
        b'{"method": "emit", "event": "e", "data": 5}',
        b'{"method": "emit", "event": "e", "data": [], "room": {"x": 1}}',
        b'{"method": "emit", "event": "e", "data": [], "namespace": "chat"}',
        b'{"method": "emit", "event": "e", "data": [{"_placeholder": true, "num": 3}],'
        b' "binary": true}',
        b'{"method": "enter_room", "sid": 1, "room": "r"}',
    ],
)
def test_malformed_messages_are_refused_with_a_reason(raw: bytes) -> None:
    op = parse_message(raw)
    assert isinstance(op, Refused) and op.reason == "malformed" and op.detail


def test_unknown_method() -> None:
    op = parse_message(b'{"method": "teleport"}')
    assert isinstance(op, Refused) and op.reason == "unsupported"


@given(st.binary(max_size=200))
def test_never_raises(raw: bytes) -> None:
    parse_message(raw)
