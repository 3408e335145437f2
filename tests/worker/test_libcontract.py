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
    hooks = {name for _, name in libcontract.PRIVATE_NAMES} - {"_async"}
    assert hooks == set(libcontract.SIGNATURES)


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
