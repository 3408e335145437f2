"""Connection-state recovery: what it costs, and how fast clients get their sessions back.

* ``recovery-fan-out``: the fan-out workload (:mod:`.fanout`) on the cluster with
  recovery off and on (``[recovery] max_disconnection_s = 120``).  With it on,
  every broadcast goes through the master, which numbers and logs it, then to
  every worker.
* ``recovery-memory``: the idle-memory workload (:mod:`.idle`), off and on:
  with it on the master holds each session's record (pid, sid, rooms, data).
* ``recovery-kill``: ``recovery_clients`` websocket clients receive a broadcast
  stream; the worker holding slot 0 is killed with SIGKILL; each of its
  clients reconnects at once (no backoff) with its pid and last offset, as
  socket.io-client does.  Reported: how many were recovered, and the time
  from the kill to each one's recovered CONNECT reply (p50/p99/max).

Clients here are the bench's raw ones, which speak aiohttp's User-Agent; they
connect with ``{"siocluster_offsets": true}`` so that the cluster treats them as
recovery clients (it would otherwise take them for python-socketio's client).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import statistics
import time
import urllib.request
from typing import Any

import aiohttp

from ..lab import Lab
from ..model import Row, Run, Section
from .fanout import _measure as measure_fanout
from .idle import _measure as measure_idle

__all__ = ["recovery_fanout", "recovery_kill", "recovery_memory"]

WINDOW_S = "120"
ON = {"SIOCLUSTER_RECOVERY_MAX_DISCONNECTION_S": WINDOW_S}
AUTH = {"siocluster_offsets": True}
OFF_LABEL, ON_LABEL = "cluster/local", "cluster/local+recovery"


def _pair(lab: Lab) -> list[Any]:
    return [lambda: lab.cluster("local", label=OFF_LABEL),
            lambda: lab.cluster("local", env=ON, label=ON_LABEL)]


def recovery_fanout(lab: Lab) -> Section:
    section = Section("recovery-fan-out")
    section.runs = lab.compare(_pair(lab),
                               lambda t: measure_fanout(lab, t, AUTH))
    for metric, key in (("deliveries/s", "deliveries_per_s"), ("p50 ms", "p50_ms"),
                        ("p99 ms", "p99_ms"), ("lost", "lost")):
        section.rows.append(Row(metric, key, ON_LABEL, OFF_LABEL))
    s = lab.settings
    section.notes.append(
        f"{s.fanout_clients} listeners + 1 emitter, {s.fanout_window} broadcasts in flight; "
        "cluster = recovery on (every broadcast sequenced and logged by the master), "
        "direct = the same cluster with recovery off")
    return section


def recovery_memory(lab: Lab) -> Section:
    section = Section("recovery-memory")
    section.runs = lab.compare(_pair(lab), lambda t: measure_idle(lab, t, AUTH),
                               rounds=1)
    for metric, key in (("master KB/conn", "master_kb_per_conn"),
                        ("workers KB/conn", "workers_kb_per_conn"),
                        ("total KB/conn", "total_kb_per_conn"),
                        ("failed connections", "failures")):
        section.rows.append(Row(metric, key, ON_LABEL, OFF_LABEL))
    section.notes.append(
        f"{lab.settings.idle_connections} idle websockets; cluster = recovery on, "
        "direct = recovery off (the master holds one session record per connection)")
    return section


class _Client:
    """A raw Socket.IO client that recovers as socket.io-client does, without backoff."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.ws_url = url.replace("http://", "ws://", 1) + "/socket.io/?EIO=4&transport=websocket"
        self.pid: str | None = None
        self.offset: str | None = None
        self.sid = ""
        self.recovered_at: float | None = None
        self.recovered: bool | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    async def open(self) -> None:
        ws = await self.http.ws_connect(self.ws_url)
        msg = await ws.receive(timeout=10)
        self.sid = json.loads(msg.data[1:])["sid"]
        auth: dict[str, Any] = dict(AUTH)
        if self.pid is not None:
            auth["pid"] = self.pid
            if self.offset is not None:
                auth["offset"] = self.offset
        await ws.send_str("40" + json.dumps(auth))
        while True:
            msg = await ws.receive(timeout=10)
            data = msg.data
            if data == "2":
                await ws.send_str("3")
            elif isinstance(data, str) and data.startswith("40"):
                reply = json.loads(data[2:])
                if self.pid is not None:
                    self.recovered = reply.get("pid") == self.pid
                    self.recovered_at = time.monotonic()
                self.pid = reply.get("pid")
                break
            elif isinstance(data, str) and data.startswith("42"):
                self._event(data)
        self.ws = ws

    def _event(self, data: str) -> None:
        args = json.loads(data[2:])
        if args and isinstance(args[-1], str):
            self.offset = args[-1]

    async def run(self) -> None:
        """Read events; on a close, reconnect (once) with the pid and offset."""
        reconnected = False
        while True:
            assert self.ws is not None
            msg = await self.ws.receive()
            if msg.type is aiohttp.WSMsgType.TEXT:
                if msg.data == "2":
                    await self.ws.send_str("3")
                elif msg.data.startswith("42"):
                    self._event(msg.data)
                continue
            if reconnected:
                return
            reconnected = True
            for _ in range(50):
                try:
                    await self.open()
                    break
                except (aiohttp.ClientError, TimeoutError, ValueError, KeyError):
                    await asyncio.sleep(0.05)
            else:
                return


def _status(admin_url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{admin_url}/status", timeout=5) as resp:
        doc: dict[str, Any] = json.loads(resp.read())
    return doc


async def _kill_run(url: str, admin_url: str, clients: int) -> dict[str, Any]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        pool = [_Client(http, url) for _ in range(clients)]
        gate = asyncio.Semaphore(50)

        async def open_one(c: _Client) -> None:
            async with gate:
                await c.open()

        await asyncio.gather(*(open_one(c) for c in pool))
        readers = [asyncio.create_task(c.run()) for c in pool]
        emitter = _Client(http, url)
        await emitter.open()
        stop = asyncio.Event()

        async def emit() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                assert emitter.ws is not None
                with contextlib.suppress(Exception):
                    await emitter.ws.send_str("42" + json.dumps(["fanout", {"s": n}]))
                await asyncio.sleep(0.01)

        emitting = asyncio.create_task(emit())
        await asyncio.sleep(1.0)
        worker = next(w for w in _status(admin_url)["workers"]
                      if w["slot"] == 0 and w["state"] == "ready")
        victims = [c for c in pool if c.sid.startswith("0.")]
        killed_at = time.monotonic()
        os.kill(worker["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(c.recovered is None for c in victims):
            await asyncio.sleep(0.05)
        stop.set()
        await emitting
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        for c in [*pool, emitter]:
            if c.ws is not None:
                await c.ws.close()
    times = sorted((c.recovered_at - killed_at) * 1000 for c in victims
                   if c.recovered and c.recovered_at is not None)
    return {"victims": len(victims), "recovered": len(times),
            "not_recovered": sum(1 for c in victims if c.recovered is False),
            "no_answer": sum(1 for c in victims if c.recovered is None),
            "times_ms": times}


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, int(q * len(values)))]


REDIS_LABEL = "cluster/redis+recovery"


def recovery_kill(lab: Lab) -> Section:
    section = Section("recovery-kill")
    clients = lab.settings.fanout_clients
    by_label: dict[str, list[Run]] = {ON_LABEL: [], REDIS_LABEL: []}
    for _ in range(lab.settings.rounds):
        for adapter, label in (("local", ON_LABEL), ("redis", REDIS_LABEL)):
            with lab.cluster(adapter, env=ON, label=label) as target:
                assert target.admin_url is not None
                result = asyncio.run(_kill_run(target.urls[0], target.admin_url, clients))
            times = result.pop("times_ms")
            by_label[label].append(Run(label, metrics={
                "victims": float(result["victims"]), "recovered": float(result["recovered"]),
                "not_recovered": float(result["not_recovered"] + result["no_answer"]),
                "p50_ms": statistics.median(times) if times else None,
                "p99_ms": _pct(times, 0.99), "max_ms": times[-1] if times else None,
            }, details=result))
    section.runs = [runs[0] if len(runs) == 1 else _merge(runs) for runs in by_label.values()]
    for metric, key in (("clients on the killed worker", "victims"),
                        ("recovered", "recovered"), ("not recovered", "not_recovered"),
                        ("kill -> recovered p50 ms", "p50_ms"),
                        ("kill -> recovered p99 ms", "p99_ms"),
                        ("kill -> recovered max ms", "max_ms")):
        section.rows.append(Row(metric, key, REDIS_LABEL, ON_LABEL))
    section.notes.append(
        f"{clients} websocket clients receiving a broadcast every 10 ms; SIGKILL to worker 0; "
        "its clients reconnect at once with pid + offset (socket.io-client waits "
        "0.5-1.5 s first); median of rounds; cluster = redis backend (Redis Streams), "
        "direct = local backend (the master's store)")
    return section


def _merge(runs: list[Run]) -> Run:
    keys = runs[0].metrics.keys()
    merged: dict[str, float | None] = {}
    for key in keys:
        values = [r.metrics[key] for r in runs if r.metrics.get(key) is not None]
        merged[key] = statistics.median(v for v in values if v is not None) if values else None
    return Run(runs[0].target, metrics=merged, details={"rounds": [r.details for r in runs]})
