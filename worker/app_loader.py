"""Import ``module:attr`` and resolve it into a Socket.IO server and the app serving it.

``attr`` may be any shape :mod:`worker.app_shapes` knows (an AsyncServer, an
aiohttp Application with one attached, an ASGI app containing a
``socketio.ASGIApp``, a plain ASGI callable) or a factory returning one.
With ``factory=True`` (``--factory``) the attribute is called first, sync or
async, as uvicorn does; without it a callable with no required argument is
still taken as a factory (it cannot be an ASGI app), one taking
``(scope, receive, send)`` as an ASGI app, and anything else is refused with
an error naming the flag.  The module is imported from the current directory
first, like gunicorn does.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from dataclasses import dataclass
from typing import Any, Literal

import socketio
from aiohttp import web

from .app_shapes import kind_of_callable, plain_asgi_shape, shape_of
from .exceptions import AppLoadError

__all__ = ["LoadedApp", "load_app", "split_app_spec"]


@dataclass(frozen=True)
class LoadedApp:
    sio: Any  # socketio.AsyncServer (untyped library)
    app: Any  # aiohttp.web.Application, or an ASGI callable when kind == "asgi"
    engineio_path: str
    kind: Literal["aiohttp", "asgi"] = "aiohttp"


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


def _built(value: Any, spec: str) -> LoadedApp | None:
    """An app that is already built; None: not one (a factory, or nothing we know)."""
    where = f"app {spec!r}"
    if isinstance(value, web.Application):
        found = _find_attached(value)
        if found is None:
            raise AppLoadError(
                f"{where} is an aiohttp Application with no socketio.AsyncServer "
                "attached (call sio.attach(app))"
            )
        return LoadedApp(found[0], value, found[1])
    shape = shape_of(value, where)
    if shape is None:
        return None
    if shape.kind == "aiohttp":
        app = web.Application()
        shape.sio.attach(app)
        found = _find_attached(app)
        return LoadedApp(shape.sio, app, found[1] if found else "/socket.io/")
    return LoadedApp(shape.sio, shape.app, shape.engineio_path, "asgi")


_EXPECTED = (
    "expected a socketio.AsyncServer, a socketio.ASGIApp or an ASGI app (FastAPI, "
    "Starlette) containing one, an aiohttp.web.Application with one attached, or a "
    "factory returning one of those"
)


async def _call_factory(value: Any, spec: str) -> Any:
    try:
        result = value()
        if inspect.isawaitable(result):
            result = await result
    except TypeError as exc:
        if kind_of_callable(value) == "asgi":
            raise AppLoadError(
                f"app {spec!r} takes (scope, receive, send): it is an ASGI app, not a "
                "factory; run it without --factory"
            ) from exc
        raise AppLoadError(f"app factory {spec!r} raised TypeError: {exc}") from exc
    except Exception as exc:
        raise AppLoadError(f"app factory {spec!r} raised {type(exc).__name__}: {exc}") from exc
    return result


async def _resolve(value: Any, spec: str, *, factory: bool) -> LoadedApp:
    if not factory:
        loaded = _built(value, spec)
        if loaded is not None:
            return loaded
        if isinstance(value, type) or not callable(value):
            raise AppLoadError(
                f"app {spec!r} is a {type(value).__module__}.{type(value).__qualname__}; "
                + _EXPECTED
            )
        kind = kind_of_callable(value)
        if kind == "asgi":
            shape = plain_asgi_shape(value, f"app {spec!r}")
            return LoadedApp(shape.sio, shape.app, shape.engineio_path, "asgi")
        if kind == "ambiguous":
            raise AppLoadError(
                f"app {spec!r} is a callable that is neither an ASGI app (scope, receive, "
                "send) nor a zero-argument factory; if it builds the app, run with "
                "--factory (or [cluster] factory = true)"
            )
    elif not callable(value):
        raise AppLoadError(f"--factory was given, but app {spec!r} is not callable")
    result = await _call_factory(value, spec)
    if inspect.isfunction(result) and kind_of_callable(result) == "asgi":
        shape = plain_asgi_shape(result, f"app {spec!r}")
        return LoadedApp(shape.sio, shape.app, shape.engineio_path, "asgi")
    loaded = _built(result, spec)
    if loaded is None:
        raise AppLoadError(
            f"app factory {spec!r} returned a {type(result).__module__}."
            f"{type(result).__qualname__}; " + _EXPECTED
        )
    return loaded


async def load_app(spec: str, *, factory: bool = False) -> LoadedApp:
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
    return await _resolve(value, spec, factory=factory)
