"""The ``siocluster`` command: the only place that calls ``sys.exit``.

Exit codes: 0 stopped cleanly; 1 runtime error (e.g. the port is taken);
2 bad usage or config; 3 the app failed to boot.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import uvloop

from worker.app_loader import split_app_spec
from worker.exceptions import AppLoadError

from .config import Config, load_config
from .exceptions import ConfigError, Halt

__all__ = ["main"]

_OVERRIDES: dict[str, tuple[str, str]] = {
    "workers": ("cluster", "workers"),
    "host": ("balancer", "host"),
    "port": ("balancer", "port"),
    "admin_host": ("admin", "host"),
    "admin_port": ("admin", "port"),
    "adapter": ("adapter", "backend"),
    "redis_url": ("adapter", "redis_url"),
    "log_level": ("logging", "level"),
    "log_format": ("logging", "format"),
    "websocket": ("balancer", "websocket"),
    "factory": ("cluster", "factory"),
    "advertise": ("cluster", "advertise"),
}


def _config_path(args: argparse.Namespace) -> tuple[Path | None, bool]:
    if args.config:
        return Path(args.config), True
    env = os.environ.get("SIOCLUSTER_CONFIG")
    if env:
        return Path(env), True
    return Path("config.toml"), False


def _load(args: argparse.Namespace) -> Config:
    overrides: dict[str, dict[str, Any]] = {}
    for attr, (section, key) in _OVERRIDES.items():
        value = getattr(args, attr, None)
        if value is not None:
            overrides.setdefault(section, {})[key] = value
    path, required = _config_path(args)
    return load_config(path, env=os.environ, overrides=overrides, path_required=required)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="config file (default ./config.toml if present)")
    p.add_argument("--admin-host", dest="admin_host")
    p.add_argument("--admin-port", dest="admin_port", type=int)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="siocluster", description="Run a python-socketio app on every core."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="start the cluster")
    run.add_argument("app", nargs="?",
                     help="module:attr of the AsyncServer, ASGI app or aiohttp app")
    run.add_argument("--factory", action="store_true", default=None,
                     help="app is a factory: call it to build the app (as uvicorn --factory)")
    run.add_argument("--workers", "-w", type=int, help="worker count (0: one per core)")
    run.add_argument("--host")
    run.add_argument("--port", "-p", type=int)
    run.add_argument("--adapter", choices=["local", "redis", "amqp", "none"])
    run.add_argument("--redis-url", dest="redis_url")
    run.add_argument("--log-level", dest="log_level",
                     choices=["debug", "info", "warning", "error"])
    run.add_argument("--log-format", dest="log_format", choices=["text", "json"])
    run.add_argument("--websocket", choices=["tunnel", "handoff"])
    run.add_argument("--advertise", metavar="HOST:PORT",
                     help="several hosts: where the others reach this host's balancer "
                          "(needs --adapter redis and a peer token)")
    _add_config_flags(run)

    status = sub.add_parser("status", help="show the workers of a running cluster")
    status.add_argument("--json", action="store_true")
    status.add_argument("--watch", type=float, metavar="SECONDS", help="refresh every SECONDS")
    _add_config_flags(status)

    for name, text in (("reload", "rolling restart"), ("stop", "graceful stop")):
        p = sub.add_parser(name, help=text)
        _add_config_flags(p)
    scale = sub.add_parser("scale", help="change the worker count")
    scale.add_argument("workers", type=int)
    _add_config_flags(scale)
    drain = sub.add_parser("drain", help="replace one worker: its successor starts, then it drains")
    drain.add_argument("slot", type=int)
    _add_config_flags(drain)
    return parser


def _admin_call(config: Config, method: str, path: str, body: Any = None) -> Any:
    host = config.admin.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    url = f"http://{host}:{config.admin.port}{path}"
    headers = {"Content-Type": "application/json"}
    if config.admin.token:
        headers["Authorization"] = f"Bearer {config.admin.token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            return json.loads(exc.read())
        except ValueError:
            raise Halt(1, f"admin endpoint {url} answered {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise Halt(1, f"no cluster answers at {url}: {exc}") from None


def render_status(doc: dict[str, Any]) -> str:
    lines = [
        f"app {doc.get('app')}  master pid {doc['master']['pid']}  "
        f"health {doc['health']['status']}  "
        f"workers {doc['health']['ready']}/{doc['health']['desired']} ready"
    ]
    for reason in doc["health"].get("reasons", []):
        lines.append(f"  ! {reason}")
    header = f"{'SLOT':>4} {'PID':>7} {'STATE':<9} {'RESTARTS':>8} {'CONNS':>6} {'RSS MB':>7} " \
             f"{'CPU%':>5} {'HB AGE':>6}  LAST EXIT"
    lines.append(header)
    for w in doc["workers"]:
        rss = w.get("rss_bytes")
        cpu = w.get("cpu_percent")
        age = w.get("heartbeat_age_s")
        lines.append(
            f"{w['slot']:>4} {w['pid'] or '-':>7} {w['state']:<9} {w['restarts']:>8} "
            f"{w['connections']:>6} {'-' if rss is None else f'{rss / 1048576:.1f}':>7} "
            f"{'-' if cpu is None else f'{cpu:.0f}':>5} "
            f"{'-' if age is None else f'{age:.1f}':>6}  {w.get('last_exit') or ''}"
        )
    for single in doc.get("singletons", []):
        holder = single["holder"]
        where = (f"{holder['host']} slot {holder['slot']} pid {holder['pid']}, "
                 f"held {single['held_for_s']:.1f}s" if holder else "no holder")
        errors = f", {single['errors']} errors" if single.get("errors") else ""
        lines.append(f"singleton {single['name']}: {where} "
                     f"({single['handovers']} handovers{errors})")
    for host in doc.get("hosts", []):
        me = " (this host)" if host["self"] else ""
        reach = "" if host["reachable"] else "  UNREACHABLE"
        lines.append(f"host {host['id']} at {host['address']}{me}: {host['workers']} workers, "
                     f"{host['connections']} connections, seen {host['last_seen_s']}s ago"
                     f"{reach}")
    b = doc["balancer"]
    lines.append(
        f"balancer: {b['requests']} requests, {b['handshakes']} handshakes, "
        f"{b['session_unknown_400']} stale sids, {b['upstream_errors_502']} upstream errors, "
        f"{b['tunnels_active']} websockets"
    )
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    config = _load(args)
    app = args.app or config.cluster.app
    if not app:
        raise ConfigError("no app given: siocluster run module:attr (or [cluster] app)")
    try:
        split_app_spec(app)
    except AppLoadError as exc:
        raise ConfigError(str(exc)) from None
    if not _is_loopback(config.admin.host) and not config.admin.token:
        raise ConfigError(
            f"admin.host = {config.admin.host!r} is not loopback: set [admin] token "
            "(or SIOCLUSTER_ADMIN_TOKEN) so the admin endpoint is not open"
        )
    from worker.logs import configure_logging

    from .master import Master

    configure_logging(config.logging.level, config.logging.format, role="master")
    master = Master(config, app, cwd=os.getcwd(), reload_config=lambda: _load(args))
    return uvloop.run(master.run())


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            sys.exit(_run(args))
        config = _load(args)
        if args.command == "status":
            while True:
                doc = _admin_call(config, "GET", "/status")
                if "workers" not in doc:
                    raise Halt(1, f"admin endpoint: {doc.get('error', doc)}")
                text = json.dumps(doc, indent=2) if args.json else render_status(doc)
                if args.watch:
                    sys.stdout.write("\x1b[2J\x1b[H")
                print(text, flush=True)
                if not args.watch:
                    break
                time.sleep(args.watch)
        elif args.command in ("reload", "stop"):
            print(json.dumps(_admin_call(config, "POST", f"/{args.command}")))
        elif args.command == "scale":
            print(json.dumps(_admin_call(config, "POST", "/scale", {"workers": args.workers})))
        elif args.command == "drain":
            print(json.dumps(_admin_call(config, "POST", "/drain", {"slot": args.slot})))
    except ConfigError as exc:
        print(f"siocluster: config error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Halt as exc:
        print(f"siocluster: error: {exc.reason}", file=sys.stderr)
        sys.exit(exc.code)
    except KeyboardInterrupt:
        sys.exit(130)
