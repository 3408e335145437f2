"""The worker's config: the sections it owns, and what the master tells it.

``[adapter]``, ``[socketio]``, ``[auth]`` and ``[logging]`` are the worker's
sections; :mod:`supervisor.config` composes them with the others and loads
them (file, environment, flags).  A worker does not parse that file: the
master sends it a :class:`WorkerConfig` in the control channel's
``Configure`` message, decoded and type-checked by msgspec, holding the
balancer's sections it applies too (``[balancer]`` for ``trusted_proxies``,
``[limits]``) and the few cluster timings it keeps.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from balancer.config import BalancerConfig, LimitsConfig

__all__ = [
    "AdapterConfig",
    "AuthConfig",
    "LoggingConfig",
    "RecoveryConfig",
    "SocketIOConfig",
    "WorkerConfig",
]


@dataclasses.dataclass(frozen=True, slots=True)
class AdapterConfig:
    backend: Literal["local", "redis", "amqp", "none"] = "local"
    redis_url: str = "redis://127.0.0.1:6379/0"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    channel: str = "siocluster"
    request_timeout_s: float = 5.0
    heartbeat_interval_s: float = 1.0
    outage_buffer_s: float = 30.0
    outage_buffer_bytes: int = 1_048_576
    # python-socketio's write-only managers publish here ("" turns it off).
    emitter_channel: str = "socketio"
    # amqp: external emits wait in a durable queue this long, this many at most.
    emitter_queue_ttl_s: float = 300.0
    emitter_queue_max: int = 100_000
    emitter_consume_delay_s: float = 5.0


@dataclasses.dataclass(frozen=True, slots=True)
class SocketIOConfig:
    # Origins allowed to connect; ["*"] means any; empty keeps the app's own setting.
    cors_allowed_origins: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class AuthConfig:
    # JWT verification of every Socket.IO connection; off unless enabled.
    enabled: bool = False
    # Exactly one of: a shared secret or PEM public key file, or a JWKS file.
    key_file: str = ""
    jwks_file: str = ""
    algorithms: tuple[str, ...] = ("RS256",)
    audience: str = ""
    issuer: str = ""
    leeway_s: float = 0.0


@dataclasses.dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"
    access_log: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class RecoveryConfig:
    # Socket.IO connection-state recovery: how long a disconnected session (its
    # sid, rooms, data and missed packets) stays recoverable; 0 turns it off.
    max_disconnection_s: float = 0.0
    # A recovered connection skips the app's connect handler (Node's skipMiddlewares).
    skip_middlewares: bool = True
    # The packet log (held by the master) is trimmed past this many bytes.
    max_log_bytes: int = 16_777_216

    @property
    def enabled(self) -> bool:
        return self.max_disconnection_s > 0


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerConfig:
    balancer: BalancerConfig = BalancerConfig()
    limits: LimitsConfig = LimitsConfig()
    adapter: AdapterConfig = AdapterConfig()
    socketio: SocketIOConfig = SocketIOConfig()
    auth: AuthConfig = AuthConfig()
    logging: LoggingConfig = LoggingConfig()
    recovery: RecoveryConfig = RecoveryConfig()
    # From [cluster] and [health]
    factory: bool = False
    gc_threshold: int = 10_000
    gc_freeze: bool = True
    graceful_timeout_s: float = 30.0
    singleton_lease_s: float = 5.0
    heartbeat_interval_s: float = 1.0
    # Several hosts: this host's id, which every sid carries ("" : one host).
    host_id: str = ""
    # From [admin]: the Socket.IO Admin UI, and the password it must be given.
    socketio_admin_ui: bool = False
    socketio_admin_ui_secret: str = ""
