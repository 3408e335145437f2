"""``/dashboard`` on the admin listener: one page, and a live stream of the cluster.

Theory of operation
-------------------
The page (``supervisor/static/``, shipped as package data: no CDN, no npm)
is static and carries no data, so it is served without the token.  Its
script reads everything from ``GET /dashboard/stream``, a Server-Sent Events
stream read with ``fetch()`` rather than ``EventSource``: ``fetch`` can send
``Authorization: Bearer <token>``, so the token never goes into a URL (where
access logs, proxies and the browser history would keep it).  The token
lives in the page's memory and ``sessionStorage`` (the tab), nowhere else.

A ticker in the master (:class:`Dashboard`) runs once a second whether or
not anyone watches, so a page opened now shows the last ten minutes:

1. it reads the master's cumulative counters into a
   :class:`~supervisor.history.Totals` and adds one point to the
   :class:`~supervisor.history.History` ring (600 points);
2. it compares what heartbeats and the balancer report with a second ago
   (:func:`~supervisor.events.observed_changes`) and adds events for guard
   refusals and adapter outages to the master's :class:`EventLog` (the
   master adds the rest, where they happen);
3. it wakes every open stream, which sends one ``state`` message: the
   /status document, the hosts, and only the points and events that stream
   has not sent yet.  A new event wakes the streams at once, so a restart
   reaches the page without waiting for the next tick.

Actions are the admin listener's POST endpoints (``/reload``, ``/scale``,
``/drain``), authenticated like every other one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from balancer.stats import LATENCY_BUCKETS_S

from .commands import DrainWorker
from .events import Event, Observation, observed_changes
from .history import History, Totals
from .state import WorkerState

if TYPE_CHECKING:
    from .master import Master

__all__ = ["PUBLIC_PATHS", "Dashboard", "DashboardCollector", "add_dashboard_routes",
           "hosts_document"]

log = logging.getLogger("siocluster.dashboard")

TICK_S = 1.0
MAX_STREAMS = 32
# Latency of these proxied request kinds is charted; "poll" (a long-poll GET
# waiting for something to say) measures idleness, not speed.
CHARTED_LATENCY = ("handshake", "send", "app")
_STATIC = {
    "": ("dashboard.html", "text/html"),
    "/app.js": ("dashboard.js", "application/javascript"),
    "/app.css": ("dashboard.css", "text/css"),
}
PUBLIC_PATHS = frozenset({*(f"/dashboard{suffix}" for suffix in _STATIC), "/dashboard/"})
_HEADERS = {
    # The page loads only its own files and talks only to this listener; no
    # form may submit anywhere (the token form is handled in script).
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def hosts_document(master: Master, now: float) -> list[dict[str, Any]]:
    """The hosts of the cluster: this one, then the others from the host registry."""
    ready = sum(1 for h in master.handles if h.state is WorkerState.READY)
    peers = [] if master.hosts is None else [
        {"host": row["id"], "address": row["address"], "workers": row["workers"],
         "connections": row["connections"], "last_seen_s": row["last_seen_s"],
         "reachable": row["reachable"], "local": False}
        for row in master.hosts.book.status(time.monotonic()) if not row["self"]]
    return [{
        "host": socket.gethostname(),
        "master_pid": os.getpid(),
        "uptime_s": round(now - master.started_at, 1),
        "port": master.ports[0],
        "admin_port": master.ports[1],
        "workers_ready": ready,
        "workers_desired": master.desired,
        "connections": sum(h.connections for h in master.handles),
        "backend": master.config.adapter.backend,
        "local": True,
        "host_id": master.host_id,
    }, *peers]


class Dashboard:
    """The charts' history, the heartbeat watcher, and the open streams."""

    def __init__(self, master: Master, status: Callable[[Master], dict[str, Any]]) -> None:
        self.master = master
        self.status = status
        self.history = History(LATENCY_BUCKETS_S)
        self._observed: Observation | None = None
        self._wake: set[asyncio.Event] = set()
        self._closing = False
        master.events.listeners.append(self._on_event)

    # The ticker

    def totals(self) -> Totals:
        m = self.master
        stats = m.balancer.stats
        counts = [0] * (len(LATENCY_BUCKETS_S) + 1)
        for kind in CHARTED_LATENCY:
            hist = stats.latency.get(kind)
            if hist is not None:
                counts = [a + b for a, b in zip(counts, hist.counts, strict=True)]
        rss: dict[int, int] = {}
        for h in m.handles:
            if h.stop_cause is None and "rss_bytes" in h.sample:
                rss[h.slot] = int(h.sample["rss_bytes"])
        return Totals(
            t=time.time(), mono=time.monotonic(),
            connections=sum(h.connections for h in m.handles),
            messages={(h.slot, h.generation): h.messages_total for h in m.handles},
            handshakes=stats.handshakes, latency_counts=counts, rss_bytes=rss,
            restarts=sum(m.restart_causes.values()),
        )

    def observation(self) -> Observation:
        m = self.master
        stats = m.balancer.stats
        return Observation(
            guards={(h.slot, h.generation): dict(h.guards) for h in m.handles},
            adapters={(h.slot, h.generation): h.adapter.state for h in m.handles
                      if h.adapter is not None},
            backend=m.config.adapter.backend,
            balancer={"rate_limited": stats.rate_limited,
                      "session_limited": stats.session_limited,
                      "proxy_protocol_errors": stats.proxy_protocol_errors},
        )

    def tick(self) -> None:
        self.history.add(self.totals())
        observed = self.observation()
        if self._observed is not None:
            for kind, level, text, slot in observed_changes(self._observed, observed):
                self.master.events.add(kind, text, level=level, slot=slot)
        self._observed = observed
        self._notify()

    async def run(self) -> None:
        failing = False
        while True:
            try:
                self.tick()
                failing = False
            except Exception:  # a bad tick must not end the charts; say so once
                if not failing:
                    log.exception("dashboard tick failed")
                failing = True
            await asyncio.sleep(TICK_S)

    # Streams

    def _on_event(self, _event: Event) -> None:
        self._notify()

    def _notify(self) -> None:
        for wake in self._wake:
            wake.set()

    def close(self) -> None:
        self._closing = True
        self._notify()

    async def messages(self) -> AsyncGenerator[dict[str, Any], None]:
        """One ``state`` message now, then one per tick or event; everything new each time."""
        wake = asyncio.Event()
        self._wake.add(wake)
        last_point = last_event = 0
        try:
            while not self._closing:
                now = time.time()
                points = self.history.since(last_point)
                events = self.master.events.since(last_event)
                if points:
                    last_point = points[-1].id
                if events:
                    last_event = events[-1].id
                yield {
                    "type": "state", "now": round(now, 3), "status": self.status(self.master),
                    "hosts": hosts_document(self.master, now),
                    "points": [p.as_dict() for p in points],
                    "events": [e.as_dict() for e in events],
                }
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), TICK_S * 2)
        finally:
            self._wake.discard(wake)

    @property
    def streams(self) -> int:
        return len(self._wake)


class DashboardCollector(Collector):
    """``siocluster_dashboard_streams``: open streams (0 once every page is closed)."""

    def __init__(self, dashboard: Dashboard) -> None:
        self.dashboard = dashboard

    def collect(self) -> list[Metric]:
        gauge = GaugeMetricFamily("siocluster_dashboard_streams", "Open /dashboard streams")
        gauge.add_metric([], self.dashboard.streams)
        return [gauge]


def drain_worker(master: Master, body: Any) -> web.Response:
    """POST /drain: queue :class:`DrainWorker` for ``{"slot": N[, "pid": P]}``."""
    try:
        slot = int(body["slot"])
        pid = body.get("pid")
        pid = None if pid is None else int(pid)
    except (ValueError, KeyError, TypeError, AttributeError):
        return web.json_response(
            {"error": 'body must be {"slot": N} or {"slot": N, "pid": P}'}, status=400)
    active = [h for h in master.handles if h.slot == slot and h.stop_cause is None]
    if not active:
        return web.json_response({"error": f"no running worker in slot {slot}"}, status=404)
    if pid is not None and all(h.pid != pid for h in active):
        return web.json_response(
            {"error": f"slot {slot} is now pid {active[-1].pid}, not {pid}"}, status=409)
    master.commands.put_nowait(DrainWorker(slot, pid))
    return web.json_response({"ok": True, "action": "drain", "slot": slot}, status=202)


def add_dashboard_routes(app: web.Application, master: Master,
                         status: Callable[[Master], dict[str, Any]]) -> Dashboard:
    """``status`` builds the /status document (:func:`supervisor.status.status_document`)."""
    dashboard = Dashboard(master, status)

    async def page(request: web.Request) -> web.Response:
        suffix = request.path[len("/dashboard"):]
        name, content_type = _STATIC[suffix]
        body = resources.files("supervisor").joinpath("static", name).read_bytes()
        return web.Response(body=body, content_type=content_type, charset="utf-8",
                            headers=_HEADERS)

    async def stream(request: web.Request) -> web.StreamResponse:
        if dashboard.streams >= MAX_STREAMS:
            return web.json_response({"error": f"at most {MAX_STREAMS} dashboards at once"},
                                     status=503)
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-store",
            "X-Accel-Buffering": "no", "X-Content-Type-Options": "nosniff",
        })
        await response.prepare(request)
        messages = dashboard.messages()
        try:
            async for message in messages:
                data = json.dumps(message, separators=(",", ":"))
                await response.write(f"data: {data}\n\n".encode())
        except ConnectionError:
            pass  # the page went away
        finally:
            await messages.aclose()  # forget this stream now, not at garbage collection
        return response

    async def drain(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        return drain_worker(master, body)

    async def ticker(_app: web.Application) -> AsyncIterator[None]:
        task = asyncio.get_running_loop().create_task(dashboard.run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def closing(_app: web.Application) -> None:
        dashboard.close()

    async def slash(_request: web.Request) -> web.Response:
        # The page's links are relative to /dashboard, not /dashboard/.
        raise web.HTTPFound("../dashboard")

    for suffix in _STATIC:
        app.router.add_get(f"/dashboard{suffix}", page)
    app.router.add_get("/dashboard/", slash)
    app.router.add_get("/dashboard/stream", stream)
    app.router.add_post("/drain", drain)
    app.cleanup_ctx.append(ticker)
    app.on_shutdown.append(closing)
    return dashboard
