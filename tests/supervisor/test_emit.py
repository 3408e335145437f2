"""The pure side of POST /emit: body checks and the choice of workers."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from supervisor.emit import EmitError, EmitRelay, Target, parse_body, plan_emit
from worker import control


def test_data_is_one_argument_args_several() -> None:
    body, args = parse_body(b'{"event": "e", "data": {"a": [1, 2]}}')
    assert msgspec.json.decode(args) == [{"a": [1, 2]}]
    body, args = parse_body(b'{"event": "e", "args": [1, "two", null]}')
    assert msgspec.json.decode(args) == [1, "two", None]
    body, args = parse_body(b'{"event": "e", "data": null}')
    assert msgspec.json.decode(args) == []  # like sio.emit(event, None)
    body, args = parse_body(b'{"event": "e", "args": [null]}')
    assert msgspec.json.decode(args) == [None]
    body, args = parse_body(b'{"event": "e", "room": 7, "except": "sid1"}')
    assert msgspec.json.decode(args) == []
    assert (body.room, body.except_, body.namespace) == (7, "sid1", "/")


@pytest.mark.parametrize("raw", [b"", b"  ", b"null", b'{"event": ""}', b'{"event": "disconnect"}',
                                 b'{"event": "e", "namespace": ""}', b'{"event": "e", "x": 1}'])
def test_bad_bodies(raw: bytes) -> None:
    with pytest.raises(EmitError) as info:
        parse_body(raw)
    assert info.value.status == 400 and info.value.reason


def test_plan_one_ready_worker_round_robin_with_an_adapter() -> None:
    workers = [Target("a", True, True), Target("b", False, True), Target("c", True, True)]
    assert plan_emit("redis", workers, 0) == (["a"], True)
    assert plan_emit("local", workers, 1) == (["c"], True)
    assert plan_emit("amqp", workers, 2) == (["a"], True)


def test_plan_every_serving_worker_without_an_adapter() -> None:
    workers = [Target("a", True, True), Target("b", False, False), Target("c", True, True)]
    assert plan_emit("none", workers, 5) == (["a", "c"], False)


def test_plan_without_workers_is_503() -> None:
    for backend in ("none", "local"):
        with pytest.raises(EmitError) as info:
            plan_emit(backend, [Target("a", False, False)], 0)
        assert info.value.status == 503


def test_relay_answers_when_the_worker_confirms_and_fails_when_it_exits() -> None:
    async def main() -> None:
        relay = EmitRelay(timeout_s=2)
        sent: list[tuple[str, control.Emit]] = []
        body, args = parse_body(b'{"event": "e", "rooms": ["r"], "except": ["s"]}')
        task = asyncio.ensure_future(relay.emit(
            "local", [Target("w", True, True)], body, args, lambda k, m: sent.append((k, m))))
        await asyncio.sleep(0)
        ((key, msg),) = sent
        assert (key, msg.rooms, msg.except_rooms, msg.broadcast) == ("w", ["r"], ["s"], True)
        relay.done(control.EmitDone(id=msg.id))
        assert await task == 1 and relay.accepted == 1
        task = asyncio.ensure_future(relay.emit(
            "local", [Target("w", True, True)], body, args, lambda k, m: None))
        await asyncio.sleep(0)
        relay.worker_gone("w")
        with pytest.raises(EmitError) as info:
            await task
        assert info.value.status == 502 and relay.failed == 1
        relay.timeout_s = 0.05
        with pytest.raises(EmitError) as info:
            await relay.emit("local", [Target("w", True, True)], body, args, lambda k, m: None)
        assert info.value.status == 504

    asyncio.run(main())
