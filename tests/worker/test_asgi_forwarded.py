"""worker.asgi_server.ForwardedMiddleware: whom an ASGI app sees as the client, no sockets."""

from __future__ import annotations

import asyncio
from typing import Any

from balancer.forwarding import TrustedProxies
from worker.asgi_server import ForwardedMiddleware

XFF = [(b"x-forwarded-for", b"203.0.113.7"), (b"x-forwarded-proto", b"https")]


def call(scope: dict[str, Any], trusted: tuple[str, ...] = ()) -> tuple[dict[str, Any], list[Any]]:
    seen: dict[str, Any] = {}
    sent: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.update(scope)
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "http.request"}

    middleware = ForwardedMiddleware(app, TrustedProxies(trusted))
    asyncio.run(middleware({"headers": [], **scope}, receive, send))
    return seen, sent


def test_through_the_masters_unix_socket_the_forwarded_client_is_believed() -> None:
    seen, sent = call({"type": "http", "client": None, "scheme": "http", "headers": XFF})
    assert seen["client"] == ("203.0.113.7", 0) and seen["scheme"] == "https"
    assert (b"connection", b"close") not in sent[0]["headers"]  # the master's pool keeps it
    seen, _ = call({"type": "websocket", "client": None, "scheme": "ws", "headers": XFF})
    assert seen["client"] == ("203.0.113.7", 0) and seen["scheme"] == "wss"


def test_handed_off_sockets_believe_headers_only_from_trusted_proxies() -> None:
    peer = {"client": ("198.51.100.1", 5555), "scheme": "ws", "headers": XFF}
    seen, _ = call({"type": "websocket", **peer})
    assert seen["client"] == ("198.51.100.1", 5555) and seen["scheme"] == "ws"
    seen, _ = call({"type": "websocket", **peer}, trusted=("198.51.100.0/24",))
    assert seen["client"] == ("203.0.113.7", 5555) and seen["scheme"] == "wss"


def test_a_handed_off_connection_closes_after_an_http_answer() -> None:
    _, sent = call({"type": "http", "client": ("198.51.100.1", 5555), "scheme": "http"})
    assert (b"connection", b"close") in sent[0]["headers"]


def test_lifespan_passes_through_untouched() -> None:
    seen, sent = call({"type": "lifespan"})
    assert seen["type"] == "lifespan" and "client" not in seen and sent == []
