"""The private names siocluster uses are where worker/libcontract.py says.

When a python-socketio or python-engineio release moves one, this fails and
names it; bump the pins in pyproject only once this passes again.
"""

from __future__ import annotations

import socketio

from worker import libcontract


def _server() -> socketio.AsyncServer:
    return socketio.AsyncServer(async_mode="aiohttp")


def test_every_private_name_is_there_with_its_signature() -> None:
    assert libcontract.check(_server()) == []


def test_the_driver_table_builds_the_environ() -> None:
    sio = _server()
    table = libcontract.driver_table(sio.eio)
    assert callable(table["translate_request"])
    libcontract.replace_driver_table(sio.eio, translate_request=len)
    assert libcontract.driver_table(sio.eio)["translate_request"] is len
    # The module-level table other servers share is untouched.
    assert libcontract.driver_table(_server().eio)["translate_request"] is not len


def test_a_moved_name_is_named() -> None:
    sio = _server()

    async def renamed(event: str, *args: object) -> None:
        return None

    sio._trigger_event = renamed  # type: ignore[method-assign]
    assert libcontract.check(sio) == [
        "socketio.AsyncServer._trigger_event('event', 'args') is not "
        "_trigger_event('event', 'namespace', 'args')"
    ]


def test_every_listed_name_says_why() -> None:
    assert all(len(why) > 40 for why in libcontract.PRIVATE_NAMES.values())
    hooks = {name for _, name in libcontract.PRIVATE_NAMES} - {"_async", "_emit_server_stats"}
    assert hooks == set(libcontract.SIGNATURES)


def test_the_admin_ui_stats_loop_is_a_method_without_arguments() -> None:
    import inspect

    from socketio.async_admin import InstrumentedAsyncServer

    loop = InstrumentedAsyncServer._emit_server_stats
    assert inspect.iscoroutinefunction(loop)
    assert tuple(inspect.signature(loop).parameters) == ("self",)
    # Without __init__: instrument() would patch python-engineio's classes for the whole process.
    admin = InstrumentedAsyncServer.__new__(InstrumentedAsyncServer)
    assert libcontract.admin_stats_loop(admin) == admin._emit_server_stats


def test_the_json_module_is_held_by_the_packet_classes() -> None:
    """install_json relies on AsyncServer(json=X) storing X on these two classes."""
    import json

    import engineio.json
    import engineio.packet
    import socketio.packet

    assert socketio.packet.Packet.json is engineio.json
    assert engineio.packet.Packet.json is engineio.json
    socketio.AsyncServer(async_mode="aiohttp", json=json)
    try:
        assert socketio.packet.Packet.json is json
        assert engineio.packet.Packet.json is json
    finally:
        socketio.packet.Packet.json = engineio.json
        engineio.packet.Packet.json = engineio.json


def test_a_none_in_the_queue_ends_a_socket_writer() -> None:
    """worker.drain.close_session relies on python-engineio's own sentinel."""
    import asyncio

    from engineio.async_socket import AsyncSocket

    async def main() -> list[object]:
        sock = AsyncSocket(_server().eio, "x")
        sock.queue.put_nowait(None)
        packets: list[object] = await sock.poll()
        return packets

    assert asyncio.run(main()) == []  # the WebSocket writer breaks on an empty list
    assert all(len(why) > 40 for why in libcontract.BEHAVIOURS.values())
