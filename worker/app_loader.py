"""Resolve ``module:attr`` into a Socket.IO server and the aiohttp app serving it.

``attr`` may be a ``socketio.AsyncServer``, an ``aiohttp.web.Application`` with
one attached (its other routes keep working), or a zero-argument callable
(sync or async) returning either.  The module is imported from the current
directory first, like gunicorn does.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from dataclasses import dataclass
from typing import Any

import socketio
from aiohttp import web

from .exceptions import AppLoadError

__all__ = ["LoadedApp", "load_app", "split_app_spec"]


@dataclass(frozen=True)
class LoadedApp:
    sio: Any  # socketio.AsyncServer (untyped library)
    app: web.Application
    engineio_path: str


def split_app_spec(spec: str) -> tuple[str, str]:
    """``"pkg.mod:attr.sub"`` -> ``("pkg.mod", "attr.sub")``; raise on anything else."""
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr or ":" in attr:
        raise AppLoadError(f"app {spec!r} is not of the form module:attr (for example chat:sio)")
    if not all(part.isidentifier() for part in module.split(".")) or not all(
        part.isidentifier() for part in attr.split(".")
    ):
        raise AppLoadError(f"app {spec!r}: module and attribute must be dotted Python names")
    return module, attr


def _find_attached(app: web.Application) -> tuple[Any, str] | None:
    for resource in app.router.resources():
        for route in resource:
            owner = getattr(route.handler, "__self__", None)
            handlers = getattr(owner, "handlers", None)
            if owner is None or not isinstance(handlers, dict):
                continue
            sio = getattr(handlers.get("message"), "__self__", None)
            if isinstance(sio, socketio.AsyncServer):
                return sio, resource.canonical
    return None


async def _resolve(value: Any, spec: str, depth: int = 0) -> LoadedApp:
    if isinstance(value, socketio.AsyncServer):
        if value.eio.async_mode != "aiohttp":
            raise AppLoadError(
                f"app {spec!r} is an AsyncServer with async_mode={value.eio.async_mode!r}; "
                "siocluster serves async_mode='aiohttp'"
            )
        app = web.Application()
        value.attach(app)
        found = _find_attached(app)
        path = found[1] if found else "/socket.io/"
        return LoadedApp(value, app, path)
    if isinstance(value, web.Application):
        found = _find_attached(value)
        if found is None:
            raise AppLoadError(
                f"app {spec!r} is an aiohttp Application with no socketio.AsyncServer "
                "attached (call sio.attach(app))"
            )
        return LoadedApp(found[0], value, found[1])
    if isinstance(value, socketio.Server):
        raise AppLoadError(
            f"app {spec!r} is a synchronous socketio.Server; siocluster needs "
            "socketio.AsyncServer(async_mode='aiohttp')"
        )
    if callable(value) and depth == 0 and not isinstance(value, type):
        try:
            result = value()
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            raise AppLoadError(f"app factory {spec!r} raised {type(exc).__name__}: {exc}") from exc
        return await _resolve(result, spec, depth + 1)
    raise AppLoadError(
        f"app {spec!r} is a {type(value).__module__}.{type(value).__qualname__}; expected a "
        "socketio.AsyncServer, an aiohttp.web.Application with one attached, or a "
        "zero-argument callable returning either"
    )


async def load_app(spec: str) -> LoadedApp:
    module_name, attr = split_app_spec(spec)
    if "" not in sys.path and sys.path[0] != ".":
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise AppLoadError(
            f"cannot import module {module_name!r} for app {spec!r}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    value: Any = module
    for part in attr.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise AppLoadError(
                f"module {module_name!r} has no attribute {attr!r} (app {spec!r})"
            ) from None
    return await _resolve(value, spec)
