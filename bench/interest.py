"""What a host spends on messages for rooms it does not hold (issue: several hosts).

``python -m bench.interest [--messages N] [--rounds R]``

Three worker processes share one redis-server, as workers of three hosts
would: a *holder* with one client in room ``"r"``, a *sender* that emits N
messages to ``"r"``, and a *bystander* that holds no room.  The bench reads
the bystander's CPU time (user + system, from /proc via psutil) over the
emits, in two modes, alternating, R rounds each:

* ``common``: every worker subscribes to the common channel (python-socketio's
  AsyncRedisManager does the same), so the bystander receives every emit and
  decodes at least its header before dropping it;
* ``dynamic``: several-host mode; the emit travels on the room's own channel,
  which only the holder subscribes to.

It prints the median CPU milliseconds of the bystander per 1,000 messages.
The worker processes are ``tests/integration/adapter_app.py``, the adapter
test harness, which runs the real adapter on a python-socketio server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import socketio

from bench.redisproc import redis_server

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "tests" / "integration" / "adapter_app.py"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Worker:
    def __init__(self, slot: int, redis_url: str, channel: str, dynamic: bool) -> None:
        self.port = _free_port()
        runtime = tempfile.mkdtemp(prefix="sioc-interest-")
        cmd = [sys.executable, str(APP), "--slot", str(slot), "--port", str(self.port),
               "--runtime-dir", runtime, "--backend", "redis", "--redis-url", redis_url,
               "--channel", channel]
        if dynamic:
            cmd += ["--host-prefix", "h"]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("READY"):
                break

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_s(self) -> float:
        times = psutil.Process(self.proc.pid).cpu_times()
        return float(times.user + times.system)

    async def op(self, http: aiohttp.ClientSession, kind: str, **fields: Any) -> Any:
        async with http.post(f"{self.url}/op", json={"kind": kind, **fields}) as resp:
            resp.raise_for_status()
            return (await resp.json())["result"]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


async def one_round(redis_url: str, dynamic: bool, messages: int, n: int) -> float:
    """CPU ms the bystander spent per 1,000 messages to a room it does not hold."""
    channel = f"interest-{n}-{'d' if dynamic else 'c'}"
    holder, sender, bystander = (Worker(s, redis_url, channel, dynamic) for s in range(3))
    got = 0
    done = asyncio.Event()
    client = socketio.AsyncClient(reconnection=False)

    @client.on("r")
    async def on_r(_data: Any) -> None:
        nonlocal got
        got += 1
        if got == messages:
            done.set()

    try:
        async with aiohttp.ClientSession() as http:
            await client.connect(holder.url, transports=["websocket"], auth={"rooms": ["r"]})
            await asyncio.sleep(0.5)  # subscriptions and peers settle
            before = bystander.cpu_s()
            await sender.op(http, "emit_many", event="r", count=messages, to="r")
            await asyncio.wait_for(done.wait(), 60)
            await asyncio.sleep(0.3)  # the bystander's share still in flight
            spent = bystander.cpu_s() - before
            await client.disconnect()
    finally:
        for w in (holder, sender, bystander):
            w.stop()
    return spent * 1000 / (messages / 1000)


async def main_async(messages: int, rounds: int) -> None:
    results: dict[str, list[float]] = {"common": [], "dynamic": []}
    with redis_server() as url:
        n = 0
        for _ in range(rounds):
            for mode in ("common", "dynamic"):  # alternating, as the machine drifts
                n += 1
                results[mode].append(await one_round(url, mode == "dynamic", messages, n))
                print(f"  {mode:8} {results[mode][-1]:7.1f} ms CPU / 1,000 messages",
                      flush=True)
    common, dynamic = (statistics.median(results[m]) for m in ("common", "dynamic"))
    print(f"bystander CPU per 1,000 messages to a room it does not hold "
          f"(median of {rounds}, {messages} messages each):")
    print(f"  common channel  {common:7.1f} ms  (spread {min(results['common']):.1f}-"
          f"{max(results['common']):.1f})")
    print(f"  dynamic rooms   {dynamic:7.1f} ms  (spread {min(results['dynamic']):.1f}-"
          f"{max(results['dynamic']):.1f})")
    if dynamic > 0:
        print(f"  ratio           {common / dynamic:7.1f}x less with dynamic rooms")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.interest")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    started = time.monotonic()
    asyncio.run(main_async(args.messages, args.rounds))
    print(f"({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
