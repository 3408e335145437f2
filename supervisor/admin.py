"""The admin listener: /health, /status, /metrics, and control actions.

``/health`` is 200 while at least one worker is ready (``"ok"``, or
``"degraded"`` with reasons when a slot is backing off or failed, or the
adapter lost its backend) and 503 when none is (:mod:`.status` evaluates
it and assembles ``/status``; :mod:`.metrics` is ``/metrics``).  It needs no
token, so load balancers and Kubernetes probes can use it; everything else
needs ``Authorization: Bearer <[admin] token>`` when a token is set.  No
secret is ever part of a response.  ``POST /emit`` emits to clients
(:mod:`.emit`).  ``/dashboard`` is a live page of all this
(:mod:`.dashboard`); the page itself holds no data and needs no token, its
stream does.

A browser sends ``Origin`` with every cross-site POST; the listener refuses
(403) a POST whose ``Origin`` is not its own, so another site open in the
operator's browser cannot reload or stop a cluster whose admin listener
has no token (loopback).  Clients that are not browsers send no ``Origin``.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from .commands import Reload, Scale, Stop
from .dashboard import PUBLIC_PATHS, DashboardCollector, add_dashboard_routes
from .emit import EmitError, parse_body
from .metrics import MasterCollector
from .status import evaluate_health, host_reasons, status_document

if TYPE_CHECKING:
    from .master import Master

__all__ = [
    "evaluate_health", "make_admin_app", "same_origin", "scale_request", "status_document",
]


def same_origin(method: str, origin: str | None, host: str | None) -> bool:
    """Pure: False for a browser's POST from another site (``Origin`` not ``http(s)://Host``)."""
    if method != "POST" or origin is None:
        return True
    scheme, _, rest = origin.partition("://")
    return scheme in ("http", "https") and host is not None and rest == host


def scale_request(body: Any) -> int | None:
    """The worker count a POST /scale body asks for, or None when it is not valid."""
    try:
        workers = int(body["workers"])
    except (ValueError, KeyError, TypeError):
        return None
    return workers if 1 <= workers <= 256 else None


def _auth_middleware(token: str) -> Any:
    """Same-origin POSTs only; the bearer token on all but /health and the public pages."""

    def authorized(request: web.Request) -> bool:
        if not token:
            return True
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    @web.middleware
    async def auth(request: web.Request, handler: Any) -> web.StreamResponse:
        if not same_origin(request.method, request.headers.get("Origin"), request.host):
            return web.json_response({"error": "cross-origin request refused"}, status=403)
        public = request.path == "/health" or (
            request.method == "GET" and request.path in PUBLIC_PATHS)
        if not public and not authorized(request):
            return web.json_response(
                {"error": "missing or wrong bearer token"}, status=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        response: web.StreamResponse = await handler(request)
        return response

    return auth


def make_admin_app(master: Master) -> web.Application:
    registry = CollectorRegistry()
    registry.register(MasterCollector(master))
    auth = _auth_middleware(master.config.admin.token)

    async def health(_request: web.Request) -> web.Response:
        code, body = evaluate_health(master.handles, master.slots.values(), master.desired,
                                     master.fd_usage(), host_reasons(master))
        return web.json_response(body, status=code)

    async def status(_request: web.Request) -> web.Response:
        return web.json_response(status_document(master))

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), content_type="text/plain", charset="utf-8"
        )

    async def reload(_request: web.Request) -> web.Response:
        master.commands.put_nowait(Reload())
        return web.json_response({"ok": True, "action": "reload"}, status=202)

    async def stop(_request: web.Request) -> web.Response:
        master.commands.put_nowait(Stop())
        return web.json_response({"ok": True, "action": "stop"}, status=202)

    async def scale(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        workers = scale_request(body)
        if workers is None:
            return web.json_response(
                {"error": 'body must be {"workers": N} with 1 <= N <= 256'}, status=400
            )
        master.commands.put_nowait(Scale(workers))
        return web.json_response({"ok": True, "action": "scale", "workers": workers}, status=202)

    async def emit(request: web.Request) -> web.Response:
        try:
            body, args = parse_body(await request.read())
            workers = await master.emit(body, args)
        except EmitError as exc:
            return web.json_response({"error": exc.reason}, status=exc.status)
        return web.json_response({"ok": True, "workers": workers})

    app = web.Application(middlewares=[auth],
                          client_max_size=master.config.limits.max_message_bytes or 1024**2)
    app.router.add_get("/health", health)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/reload", reload)
    app.router.add_post("/stop", stop)
    app.router.add_post("/scale", scale)
    app.router.add_post("/emit", emit)
    registry.register(DashboardCollector(add_dashboard_routes(app, master, status_document)))
    return app
