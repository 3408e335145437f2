"""Light Socket.IO load in a process of its own, for tests that watch a cluster under load.

    python -m tests.loadgen URL [--clients N] [--polling]

Connects N python-socketio clients (with ``--polling``, every other one stays on
long-polling), each joins ``room-<i>`` (the app needs a ``join`` event, as
tests/apps/dashboard_app.py has) and asks ``whoami``; prints one JSON line,
``{"sids": {sid: worker pid, ...}}`` in client order, then echoes with acks every
50 ms until SIGTERM.  Clients of a killed worker reconnect.  On SIGTERM it
disconnects them for at most 2 s and exits: the test's own event loop never holds
a python-socketio client, so nothing in it can outlive the test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys

import socketio


async def main(url: str, count: int, polling: bool) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    clients: list[socketio.AsyncClient] = []
    sids: dict[str, int] = {}
    for i in range(count):
        client = socketio.AsyncClient(reconnection_delay=0.1, reconnection_delay_max=0.5)
        clients.append(client)
        transports = ["polling"] if polling and i % 2 else None
        await client.connect(url, wait_timeout=10, transports=transports)
        await client.call("join", f"room-{i}", timeout=10)
        who = await client.call("whoami", timeout=10)
        sids[who["sid"]] = who["pid"]
    sys.stdout.write(json.dumps({"sids": sids}) + "\n")
    sys.stdout.flush()

    async def echo() -> None:
        while True:
            for client in clients:
                with contextlib.suppress(Exception):
                    await client.call("echo", "tick", timeout=2)
            await asyncio.sleep(0.05)

    task = asyncio.create_task(echo())
    await stop.wait()
    task.cancel()
    for client in clients:
        client.reconnection = False
    with contextlib.suppress(Exception):
        await asyncio.wait_for(asyncio.gather(*(c.disconnect() for c in clients),
                                              return_exceptions=True), 2.0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--polling", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.url, args.clients, args.polling))
    sys.stdout.flush()
    os._exit(0)  # whatever a client library left running
