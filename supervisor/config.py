"""Typed, frozen configuration and the one function that builds it.

Precedence, highest first: CLI flag > ``SIOCLUSTER_<SECTION>_<KEY>`` environment
variable > the TOML file > built-in defaults.  :func:`load_config` has no side
effects: it reads the file it is given and the mapping of environment variables
it is given, and either returns a :class:`Config` or raises
:class:`~supervisor.exceptions.ConfigError` whose message names the key, where
it came from, and the nearest valid key when it looks like a typo.

Every duration ends in ``_s``, every size in ``_bytes`` or ``_mb``.  A limit of
``0`` turns that limit off.  The sections themselves (the supervisor's own and
the ones it composes from ``balancer`` and ``worker``) are in
:mod:`supervisor.sections`; this module loads, checks, reloads and prints them.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from balancer.peerauth import token_error
from balancer.sid import host_id_error

from .exceptions import ConfigError
from .sections import (
    SECTIONS,
    AdapterConfig,
    AdminConfig,
    AuthConfig,
    BalancerConfig,
    ClusterConfig,
    Config,
    HealthConfig,
    LimitsConfig,
    LoggingConfig,
    RecoveryConfig,
    SocketIOConfig,
    derived_host_id,
    parse_advertise,
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
    "config_from_dict",
    "config_to_dict",
    "derived_host_id",
    "keep_restart_only",
    "load_config",
    "parse_advertise",
    "reloaded",
]


_ENV_PREFIX = "SIOCLUSTER_"
_SECRET_KEYS = {("admin", "token"), ("admin", "socketio_admin_ui_password"),
                ("cluster", "peer_token")}


def _suggest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


_EXPECTED = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _expected(value: Any, hint: Any, where: str) -> str:
    if typing.get_origin(hint) is Literal:
        allowed = ", ".join(map(repr, typing.get_args(hint)))
        return f"{where}: {value!r} is not one of {allowed}"
    wanted = _EXPECTED.get(hint, "a list of strings")
    return f"{where}: expected {wanted}, got {value!r}"


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against the field's type with msgspec, converting only where lossless.

    msgspec's strict conversion refuses what a TOML or env typo produces (a bool
    for an int, a float for an int, a number for a string); the message is ours,
    in the file's words, so it names the key and what it expected.
    """
    if typing.get_origin(hint) is tuple and isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]  # env: "a, b"
    try:
        out = msgspec.convert(value, hint, strict=True)
    except msgspec.ValidationError:
        raise ConfigError(_expected(value, hint, where)) from None
    if isinstance(out, int | float) and not isinstance(out, bool) and out < 0:
        raise ConfigError(f"{where}: must not be negative, got {value}")
    return out


def _parse_env_value(raw: str, hint: Any) -> Any:
    """Environment values are strings: read them as the field's type."""
    if hint is bool:
        low = raw.strip().lower()
        if low in {"1", "true", "yes", "on"}:
            return True
        if low in {"0", "false", "no", "off"}:
            return False
        return raw
    if hint is int:
        try:
            return int(raw)
        except ValueError:
            return raw
    if hint is float:
        try:
            return float(raw)
        except ValueError:
            return raw
    return raw


def _field_hints(section_type: type[Any]) -> dict[str, Any]:
    return typing.get_type_hints(section_type)


def config_from_dict(data: Mapping[str, Any], source: str = "<dict>") -> Config:
    """Build a :class:`Config` from nested mappings, checking every key and type."""
    sections: dict[str, Any] = {}
    for section_name, values in data.items():
        if section_name not in SECTIONS:
            raise ConfigError(
                f"{source}: unknown section [{section_name}]"
                f"{_suggest(section_name, list(SECTIONS))}"
            )
        if not isinstance(values, Mapping):
            raise ConfigError(f"{source}: [{section_name}] must be a table")
        section_type = SECTIONS[section_name]
        hints = _field_hints(section_type)
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            if key not in hints:
                raise ConfigError(
                    f"{source}: unknown key {section_name}.{key}"
                    f"{_suggest(key, list(hints))}"
                )
            kwargs[key] = _coerce(value, hints[key], f"{source}: {section_name}.{key}")
        sections[section_name] = section_type(**kwargs)
    config = Config(**sections)
    if config.cluster.singleton_lease_s <= 0:
        raise ConfigError(f"{source}: cluster.singleton_lease_s must be more than 0")
    if config.admin.socketio_admin_ui and not (
            config.admin.socketio_admin_ui_password or config.admin.token):
        raise ConfigError(
            f"{source}: admin.socketio_admin_ui needs admin.socketio_admin_ui_password "
            "(or admin.token): the Admin UI can disconnect clients and read their headers")
    if any(a.lower() == "none" for a in config.auth.algorithms):
        raise ConfigError(f"{source}: auth.algorithms: 'none' is refused (unsigned tokens)")
    rc = config.recovery
    if rc.max_disconnection_s < 0 or rc.max_log_bytes <= 0:
        raise ConfigError(f"{source}: recovery.max_disconnection_s must be 0 (off) or more, "
                          "and recovery.max_log_bytes more than 0")
    if rc.enabled and config.adapter.backend not in ("local", "redis"):
        raise ConfigError(
            f"{source}: recovery.max_disconnection_s: connection-state recovery needs "
            f"adapter.backend = \"local\" or \"redis\" (not {config.adapter.backend!r})"
        )
    _check_hosts(config, source)
    for entry in config.balancer.trusted_proxies:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigError(
                f"{source}: balancer.trusted_proxies: {entry!r} is not an address or a "
                "network (e.g. \"10.0.0.0/8\")"
            ) from None
    return config


def _check_hosts(config: Config, source: str) -> None:
    c = config.cluster
    if not c.advertise:
        if c.host_id:
            raise ConfigError(f"{source}: cluster.host_id needs cluster.advertise "
                              "(it names this host among several)")
        return
    try:
        parse_advertise(c.advertise)
    except ValueError as exc:
        raise ConfigError(f"{source}: cluster.advertise: {exc}") from None
    if config.adapter.backend != "redis":
        raise ConfigError(
            f"{source}: cluster.advertise needs adapter.backend = \"redis\" (hosts find "
            f"each other and share rooms through Redis), got {config.adapter.backend!r}"
        )
    problem = token_error(c.peer_token)
    if problem is not None:
        raise ConfigError(f"{source}: cluster.peer_token (env SIOCLUSTER_CLUSTER_PEER_TOKEN) "
                          f"{problem}")
    if c.host_id and (problem := host_id_error(c.host_id)) is not None:
        raise ConfigError(f"{source}: cluster.host_id: {problem}")
    if c.host_lease_s < 2 * config.health.heartbeat_interval_s:
        raise ConfigError(f"{source}: cluster.host_lease_s must be at least twice "
                          "health.heartbeat_interval_s")


# What the master itself enforces, fixed when it starts: its listeners and the
# balancer's limits.  A reload keeps these (and says so); the workers, which
# restart on a reload, take everything else.
_RESTART_ONLY: dict[str, tuple[str, ...] | None] = {
    "balancer": None,  # every key
    # The master grants leases by it; old and new workers must agree during a roll.
    "cluster": ("singleton_lease_s", "advertise", "host_id", "peer_token", "host_lease_s"),
    "admin": None,
    # The master holds the sessions and the packet log; old and new workers share them in a roll.
    "recovery": None,
    "limits": ("max_message_bytes", "max_header_bytes", "max_header_count", "header_timeout_s",
               "idle_timeout_s", "tcp_keepalive_s", "handshake_rate_per_ip",
               "max_sessions_per_ip"),
}


def keep_restart_only(old: Config, new: Config) -> tuple[Config, list[str]]:
    """``new`` with the keys only a restart can change kept as in ``old``, and
    the names of those that differed (``"limits.header_timeout_s"``, ...)."""
    changed: list[str] = []
    sections: dict[str, Any] = {}
    for section_name, keys in _RESTART_ONLY.items():
        before, after = getattr(old, section_name), getattr(new, section_name)
        names = keys if keys is not None else [f.name for f in dataclasses.fields(before)]
        kept = {k: getattr(before, k) for k in names if getattr(before, k) != getattr(after, k)}
        changed += [f"{section_name}.{k}" for k in kept]
        if kept:
            sections[section_name] = dataclasses.replace(after, **kept)
    return dataclasses.replace(new, **sections), changed


def reloaded(old: Config, new: Config, desired: int) -> tuple[Config, int, list[str]]:
    """What a reload applies: ``new`` with the restart-only keys kept as in ``old``
    (:func:`keep_restart_only`, named in the list), and the desired worker count.
    A runtime scale (TTIN/TTOU, ``siocluster scale``) survives a reload unless
    the configured worker count itself changed."""
    new, kept = keep_restart_only(old, new)
    if new.cluster.workers != old.cluster.workers:
        desired = new.effective_workers()
    return new, desired, kept


def config_to_dict(config: Config, *, redact: bool = False) -> dict[str, dict[str, Any]]:
    """The inverse of :func:`config_from_dict`; ``redact`` hides secrets."""
    out: dict[str, dict[str, Any]] = {}
    for section_name in SECTIONS:
        section = getattr(config, section_name)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            if isinstance(value, tuple):
                value = list(value)
            if redact and value and (section_name, f.name) in _SECRET_KEYS:
                value = "***"
            if redact and f.name in ("redis_url", "amqp_url") and isinstance(value, str):
                value = redact_url(value)
            values[f.name] = value
        out[section_name] = values
    return out


def redact_url(url: str) -> str:
    """Hide the password in ``scheme://user:password@host``."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else f"{scheme}://***@{host}"


def load_config(
    path: Path | None,
    *,
    env: Mapping[str, str],
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    path_required: bool = True,
) -> Config:
    """Merge defaults, the file at ``path``, ``env`` and ``overrides``.

    ``path`` may be None (no file).  With ``path_required`` false a missing file
    is the same as no file: that is how ``./config.toml`` is picked up only when
    present.
    """
    merged: dict[str, dict[str, Any]] = {}
    if path is not None:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            if path_required:
                raise ConfigError(f"{path}: config file not found") from None
            raw = b""
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
        try:
            file_data = tomllib.loads(raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
        config_from_dict(file_data, str(path))  # validate with the file named
        for section, values in file_data.items():
            merged.setdefault(section, {}).update(values)

    for name, raw_value in env.items():
        if not name.startswith(_ENV_PREFIX) or name == "SIOCLUSTER_CONFIG":
            continue
        rest = name[len(_ENV_PREFIX) :].lower()
        section, _, key = rest.partition("_")
        if section not in SECTIONS or not key:
            raise ConfigError(
                f"environment: unknown variable {name}"
                f"{_suggest(section, list(SECTIONS))}"
            )
        hints = _field_hints(SECTIONS[section])
        if key not in hints:
            raise ConfigError(
                f"environment: {name} names unknown key {section}.{key}"
                f"{_suggest(key, list(hints))}"
            )
        value = _parse_env_value(raw_value, hints[key])
        _coerce(value, hints[key], f"environment: {name}")
        merged.setdefault(section, {})[key] = value

    given = {
        section: {k: v for k, v in values.items() if v is not None}
        for section, values in (overrides or {}).items()
    }
    config_from_dict(given, "command line")
    for section, values in given.items():
        merged.setdefault(section, {}).update(values)

    return config_from_dict(merged, "merged config")
