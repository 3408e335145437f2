"""What forwarding between hosts costs: echo through a host that does not own the session.

``python -m bench.forwarding [--clients N] [--duration S] [--rounds R]``

Two siocluster hosts (one worker each, the redis adapter, multi-host mode)
share one redis-server on this machine.  Every client makes its session on
host A (the owner), then runs emit-with-ack in a closed loop for S seconds,
either *direct* (its requests go to A) or *forwarded* (they go to host B,
whose balancer forwards them to A: polling over keep-alive, the WebSocket as
a byte tunnel).  Modes alternate, R rounds each; the bench prints the median
acks/s of each and the ratio forwarded / direct, for ws-echo and polling-echo.

The same client (bench/clients.py, one process) drives both modes, so the
ratio is the forwarding hop's price on this machine, not an absolute figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

from bench import protocol as p
from bench.clients import PollingClient, WsClient, _polling_handshake
from bench.redisproc import redis_server
from bench.targets import APP_DIR, free_port

REPO = Path(__file__).resolve().parents[1]
TOKEN = "bench-forwarding-peer-token-0123456789"


@contextlib.contextmanager
def host(host_id: str, redis_url: str, log_dir: Path) -> Iterator[str]:
    """One siocluster host (one worker) in several-host mode; yields its URL."""
    port, admin = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO),
           "SIOCLUSTER_ADAPTER_BACKEND": "redis", "SIOCLUSTER_ADAPTER_REDIS_URL": redis_url,
           "SIOCLUSTER_ADAPTER_CHANNEL": "bench-forwarding",
           "SIOCLUSTER_ADAPTER_EMITTER_CHANNEL": "",
           "SIOCLUSTER_CLUSTER_ADVERTISE": f"127.0.0.1:{port}",
           "SIOCLUSTER_CLUSTER_HOST_ID": host_id, "SIOCLUSTER_CLUSTER_PEER_TOKEN": TOKEN}
    cmd = [sys.executable, "-c", "from supervisor.cli import main; main()", "run",
           "bench_app:app", "--workers", "1", "--port", str(port), "--admin-port", str(admin),
           "--log-level", "warning"]
    with (log_dir / f"host-{host_id}.log").open("w") as log:
        proc = subprocess.Popen(cmd, cwd=APP_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                import urllib.request
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/health", timeout=1):
                    break
            if proc.poll() is not None:
                raise RuntimeError(f"host {host_id} exited; see {log_dir}")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


async def _ws_client(http: aiohttp.ClientSession, owner: str, via: str) -> WsClient:
    sid, _url, _headers = await _polling_handshake(http, owner)
    ws_url = f"{via}/socket.io/?{p.query('websocket', sid)}".replace("http://", "ws://", 1)
    ws = await http.ws_connect(ws_url, autoping=True)
    await ws.send_str(p.PROBE_PING)
    await ws.receive()
    await ws.send_str(p.UPGRADE)
    return WsClient(ws, sid)


async def _polling_client(http: aiohttp.ClientSession, owner: str, via: str) -> PollingClient:
    sid, url, _headers = await _polling_handshake(http, owner)
    return PollingClient(http, sid, url.replace(owner, via, 1))


async def one_run(transport: str, owner: str, via: str, clients: int,
                  duration_s: float) -> float:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        make = _ws_client if transport == "websocket" else _polling_client
        conns: list[Any] = await asyncio.gather(*(make(http, owner, via)
                                                  for _ in range(clients)))
        done = 0

        async def loop(client: Any, deadline: float) -> None:
            nonlocal done
            while time.monotonic() < deadline:
                await client.call("echo", "x" * 32)
                done += 1

        started = time.monotonic()
        await asyncio.gather(*(loop(c, started + duration_s) for c in conns))
        elapsed = time.monotonic() - started
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
    return done / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.forwarding")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    log_dir = Path(tempfile.mkdtemp(prefix="bench-forwarding-"))
    with redis_server() as redis_url, host("ba", redis_url, log_dir) as a, \
            host("bb", redis_url, log_dir) as b:
        time.sleep(1.5)  # each host lists the other
        for transport, name in (("websocket", "ws-echo"), ("polling", "polling-echo")):
            rates: dict[str, list[float]] = {"direct": [], "forwarded": []}
            for _ in range(args.rounds):
                for mode, via in (("direct", a), ("forwarded", b)):
                    rate = asyncio.run(one_run(transport, a, via, args.clients, args.duration))
                    rates[mode].append(rate)
            direct, fwd = (statistics.median(rates[m]) for m in ("direct", "forwarded"))
            print(f"{name:13} direct {direct:8.0f} acks/s ({min(rates['direct']):.0f}-"
                  f"{max(rates['direct']):.0f})  forwarded {fwd:8.0f} acks/s "
                  f"({min(rates['forwarded']):.0f}-{max(rates['forwarded']):.0f})  "
                  f"ratio {fwd / direct:.2f}x", flush=True)
    print(f"({args.clients} clients, {args.duration:g}s x {args.rounds} alternating rounds; "
          f"logs in {log_dir})")


if __name__ == "__main__":
    main()
