"""Every uvicorn name siocluster uses beyond ``uvicorn.Config``, in one place.

uvicorn's public API runs a whole server (``uvicorn.Server``): it binds its own
listeners, installs signal handlers and owns the lifespan.  A worker needs
less and something else: uvicorn's HTTP protocol (httptools) and WebSocket
protocol classes on a listener it binds itself, plus sockets the master hands
off, which ``Server`` has no way to adopt (its protocol factory is a closure
inside ``Server.startup``).  So this module builds that factory the way
``Server.startup`` does:

* ``Config.load()`` resolves ``http_protocol_class``, ``ws_protocol_class``
  and ``loaded_app`` (the app wrapped in uvicorn's middlewares, if any);
* ``uvicorn.server.ServerState`` is the state shared by every connection
  (``connections``: to shut them down; ``tasks``: to wait for them;
  ``default_headers``: the Date/Server headers ``Server.on_tick`` refreshes
  once a second);
* the protocol class is called with ``config=``, ``server_state=``,
  ``app_state=`` keywords, and has a ``shutdown()`` method.

tests/worker/test_uvicorn_compat.py checks each of these against the
installed uvicorn and names what changed when one fails.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import Any

import uvicorn
from uvicorn.server import ServerState

__all__ = ["ProtocolFactory", "ServerState", "make_config", "protocol_factory",
           "refresh_default_headers"]

ProtocolFactory = Callable[[], asyncio.Protocol]

# uvicorn's default (16 MiB), when [limits] max_message_bytes is 0 (no cap).
_WS_MAX_SIZE_DEFAULT = 16 * 1024 * 1024


def make_config(app: Any, *, access_log: bool, ws_max_size: int | None) -> uvicorn.Config:
    config = uvicorn.Config(
        app,
        http="httptools",
        ws="auto",
        loop="none",  # the worker already runs uvloop
        lifespan="off",  # worker.lifespan drives it, once per worker
        interface="asgi3",
        # The master resolved the client and says so in X-Forwarded-For; the
        # worker's own middleware decides whom to believe (trusted_proxies).
        proxy_headers=False,
        server_header=False,
        access_log=access_log,
        log_config=None,
        # Longer than the master's pooled keep-alive (balancer.proxy), so the worker
        # never closes a connection the master is about to reuse.
        timeout_keep_alive=75,
        # python-engineio pings; uvicorn's own WebSocket pings would double them.
        ws_ping_interval=None,
        ws_ping_timeout=None,
        ws_max_size=ws_max_size or _WS_MAX_SIZE_DEFAULT,
    )
    config.load()
    return config


def protocol_factory(
    config: uvicorn.Config, state: ServerState, app_state: dict[str, Any]
) -> ProtocolFactory:
    protocol_class: Any = config.http_protocol_class

    def make() -> asyncio.Protocol:
        protocol: asyncio.Protocol = protocol_class(
            config=config, server_state=state, app_state=app_state
        )
        return protocol

    return make


def refresh_default_headers(config: uvicorn.Config, state: ServerState) -> None:
    """What ``Server.on_tick`` does once a second: a fresh Date header."""
    date = [(b"date", formatdate(time.time(), usegmt=True).encode())] if config.date_header else []
    state.default_headers = date + config.encoded_headers
