"""The balancer's config sections, ``[balancer]`` and ``[limits]``.

Frozen and typed; :mod:`supervisor.config` composes every package's sections
and loads them (file, environment, flags).  ``[limits]`` lives here because the
balancer is its lowest user: the workers read its per-socket keys too.
Every duration ends in ``_s``, every size in ``_bytes``; ``0`` turns a limit off.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

__all__ = ["BalancerConfig", "LimitsConfig"]


@dataclasses.dataclass(frozen=True, slots=True)
class BalancerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    # "handoff": pass upgraded sockets to the worker; "tunnel": relay bytes in the master.
    websocket: Literal["tunnel", "handoff"] = "handoff"
    # Must exceed the app's ping_interval + ping_timeout (a long-poll waits that long).
    upstream_timeout_s: float = 120.0
    # Seconds a connection to a worker may take to open.
    connect_timeout_s: float = 5.0
    # Addresses whose X-Forwarded-For is trusted; empty trusts none.
    trusted_proxies: tuple[str, ...] = ()
    # Every connection must open with a PROXY protocol v1/v2 header.
    proxy_protocol: bool = False
    # The HTTP/1.1 server of the public listener: "httptools" (balancer/front.py)
    # or "aiohttp" (aiohttp's web.Server, the path before it).
    http: Literal["httptools", "aiohttp"] = "httptools"
    # Pass a kept-alive polling connection to the worker that owns its sessions,
    # which then serves them without the master (balancer/stickiness.py).
    polling_handoff: bool = True



@dataclasses.dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_message_bytes: int = 1_000_000
    max_header_bytes: int = 16_384
    max_header_count: int = 100
    header_timeout_s: float = 10.0
    # Idle between requests on a kept-alive connection, or within a request body.
    idle_timeout_s: float = 75.0
    # Kernel keepalive probes after this long idle find peers that vanished.
    tcp_keepalive_s: float = 60.0
    handshake_rate_per_ip: float = 0.0
    max_sessions_per_ip: int = 0
    # Per-socket event rate (token bucket, burst = 2x rate) and what happens past it.
    event_rate_per_socket: float = 0.0
    event_rate_action: Literal["drop", "disconnect"] = "drop"
    # Bytes waiting to be sent to one socket (python-engineio's queue is unbounded);
    # past it the socket is closed and counted (outbound_overflow).  0: no cap.
    max_outbound_bytes: int = 16_777_216
