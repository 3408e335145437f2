"""The configuration's sections: the supervisor's own, and the :class:`Config` that composes them.

Each package owns its sections (``balancer/config.py``: ``[balancer]``,
``[limits]``; ``worker/config.py``: ``[adapter]``, ``[socketio]``,
``[auth]``, ``[logging]``, ``[recovery]``); the supervisor owns
``[cluster]``, ``[admin]`` and ``[health]`` and composes all of them into
one frozen :class:`Config`, which also says what a worker is told
(:meth:`Config.for_worker`).  :data:`SECTIONS` maps each TOML table to its
dataclass; :mod:`supervisor.config` loads and checks them.

Every duration ends in ``_s``, every size in ``_bytes`` or ``_mb``.  A limit of
``0`` turns that limit off.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import typing
from typing import Any, Literal

from balancer.config import BalancerConfig, LimitsConfig
from worker.config import (
    AdapterConfig,
    AuthConfig,
    LoggingConfig,
    RecoveryConfig,
    SocketIOConfig,
    WorkerConfig,
)

__all__ = [
    "SECTIONS",
    "AdapterConfig",
    "AdminConfig",
    "AuthConfig",
    "BalancerConfig",
    "ClusterConfig",
    "Config",
    "HealthConfig",
    "LimitsConfig",
    "LoggingConfig",
    "RecoveryConfig",
    "SocketIOConfig",
    "derived_host_id",
    "parse_advertise",
]


@dataclasses.dataclass(frozen=True, slots=True)
class ClusterConfig:
    # The app, as module:attr; the positional CLI argument overrides it.
    app: str = ""
    # Call app (module:attr) to build the app, as uvicorn --factory does.
    factory: bool = False
    # Number of workers; 0 means one per CPU core.
    workers: int = 0
    # Where the private Unix sockets live; "" means a fresh 0700 temp dir.
    runtime_dir: str = ""
    # Timeouts
    boot_timeout_s: float = 30.0
    graceful_timeout_s: float = 30.0
    # Pin worker N to core N % cpu_count.
    pin_cpus: bool = False
    # The workers' garbage collector (worker/gctune.py): the youngest generation's
    # threshold (0 keeps Python's 700), and whether the loaded app's objects are
    # frozen out of later collections (gc.freeze).
    gc_threshold: int = 10_000
    gc_freeze: bool = True
    # @singleton leases: a dead or hung holder is replaced within this (plus a heartbeat).
    singleton_lease_s: float = 5.0
    # Several hosts, one cluster: where other hosts reach this host's balancer
    # ("HOST:PORT"). Set, with the redis adapter, it turns multi-host mode on.
    advertise: str = ""
    # This host's id in sids (1-8 of a-z0-9); "" derives one from advertise.
    host_id: str = ""
    # Shared secret (>= 32 characters) that signs forwarded requests.
    peer_token: str = ""
    # A host that stops renewing its registration leaves the cluster after this.
    host_lease_s: float = 10.0


@dataclasses.dataclass(frozen=True, slots=True)
class AdminConfig:
    host: str = "127.0.0.1"
    port: int = 8001
    # Bearer token; required when host is not loopback.
    token: str = ""
    # The Socket.IO Admin UI (python-socketio's instrument()) in every worker,
    # on the /admin namespace; its password ("": the admin token).
    socketio_admin_ui: bool = False
    socketio_admin_ui_password: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class HealthConfig:
    heartbeat_interval_s: float = 1.0
    heartbeat_timeout_s: float = 10.0
    kill_grace_s: float = 5.0
    max_rss_mb: int = 0
    max_lifetime_s: float = 0.0
    lifetime_jitter_s: float = 0.0
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 30.0
    flap_window_s: float = 60.0
    flap_max_restarts: int = 5
    fail_max_restarts: int = 10
    # "stop": a worker that cannot import the app stops the cluster.
    on_boot_failure: Literal["stop", "retry"] = "stop"
    # A draining worker (roll, recycle, scale-down) closes its sessions spread over this long.
    drain_spread_s: float = 2.0


@dataclasses.dataclass(frozen=True, slots=True)
class Config:
    cluster: ClusterConfig = ClusterConfig()
    balancer: BalancerConfig = BalancerConfig()
    admin: AdminConfig = AdminConfig()
    adapter: AdapterConfig = AdapterConfig()
    health: HealthConfig = HealthConfig()
    limits: LimitsConfig = LimitsConfig()
    logging: LoggingConfig = LoggingConfig()
    socketio: SocketIOConfig = SocketIOConfig()
    auth: AuthConfig = AuthConfig()
    recovery: RecoveryConfig = RecoveryConfig()

    def effective_workers(self) -> int:
        return self.cluster.workers or (os.cpu_count() or 1)

    def host_id(self) -> str:
        """This host's id in sids: "" unless several hosts form the cluster."""
        c = self.cluster
        if not c.advertise:
            return ""
        return c.host_id or derived_host_id(c.advertise)

    def for_worker(self) -> WorkerConfig:
        """What a worker is told: its packages' sections, and the few timings it keeps."""
        return WorkerConfig(
            balancer=self.balancer, limits=self.limits, adapter=self.adapter,
            socketio=self.socketio, auth=self.auth, logging=self.logging,
            recovery=self.recovery,
            factory=self.cluster.factory,
            gc_threshold=self.cluster.gc_threshold,
            gc_freeze=self.cluster.gc_freeze,
            graceful_timeout_s=self.cluster.graceful_timeout_s,
            singleton_lease_s=self.cluster.singleton_lease_s,
            heartbeat_interval_s=self.health.heartbeat_interval_s,
            host_id=self.host_id(),
            socketio_admin_ui=self.admin.socketio_admin_ui,
            socketio_admin_ui_secret=(self.admin.socketio_admin_ui_password or self.admin.token
                                      if self.admin.socketio_admin_ui else ""),
        )


SECTIONS: dict[str, type[Any]] = {
    f.name: typing.get_type_hints(Config)[f.name] for f in dataclasses.fields(Config)
}


def parse_advertise(value: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (``"[v6]:PORT"`` for IPv6) as a (host, port) pair.

    Port 0 means the port the balancer bound (``balancer.port``, which may be 0 too).
    """
    host, sep, port_text = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise ValueError(f"{value!r} is not HOST:PORT (e.g. \"10.0.0.5:8000\")")
    return host, int(port_text)


def derived_host_id(advertise: str) -> str:
    """A stable id for the host at ``advertise``: 6 base-36 digits of its hash."""
    number = int.from_bytes(hashlib.sha256(advertise.encode()).digest()[:8], "big")
    digits = ""
    for _ in range(6):
        number, digit = divmod(number, 36)
        digits += "0123456789abcdefghijklmnopqrstuvwxyz"[digit]
    return digits
