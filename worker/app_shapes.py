"""What a user's ``module:attr`` is, and where its Engine.IO endpoint lives.  No I/O.

Shapes, in the order they are tried (:func:`shape_of`):

* ``socketio.AsyncServer``: served alone; ``async_mode="aiohttp"`` on aiohttp,
  ``async_mode="asgi"`` wrapped in ``socketio.ASGIApp`` at ``/socket.io/``;
* ``aiohttp.web.Application`` with a server attached (``sio.attach(app)``);
* an ASGI app containing a ``socketio.ASGIApp``: the ASGIApp itself, one that
  wraps the rest (``other_asgi_app=``), or one mounted in a Starlette/FastAPI
  app, found by walking ``routes`` (``Mount``, ``Host``) and middleware
  (``.app``);
* a plain ASGI callable (``async def app(scope, receive, send)``) that calls a
  ``socketio.ASGIApp`` of its own module;
* a factory: called, and its result tried once more (not called again).

Factory or ASGI callable?  A callable with no required argument can only be a
factory; one taking exactly ``(scope, receive, send)`` can only be an ASGI
app.  Anything else is ambiguous: ``--factory`` says it is a factory, as with
uvicorn, and without the flag the error says so (:func:`kind_of_callable`).

The Engine.IO path: Starlette (since 0.33) passes a mounted app the *full*
request path, with the mount in ``root_path``; python-engineio's ASGIApp
compares the full path with its ``socketio_path``.  So an ASGIApp mounted at
``/ws`` answers only if its ``socketio_path`` starts with ``/ws/``
(``socketio_path="/ws/socket.io"``), and that is the path the balancer routes
by.  One mounted at ``/ws`` with ``socketio_path="socket.io"`` would answer
404 to every client, under plain uvicorn as well: that is a load error
naming the fix (:func:`engineio_path_under`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Literal

import engineio
import socketio

from .exceptions import AppLoadError

__all__ = ["Shape", "engineio_path_under", "find_mounted", "kind_of_callable",
           "plain_asgi_shape", "shape_of"]

Kind = Literal["aiohttp", "asgi"]
_MAX_DEPTH = 16


@dataclass(frozen=True)
class Shape:
    sio: Any  # socketio.AsyncServer
    app: Any  # aiohttp.web.Application or an ASGI callable
    kind: Kind
    engineio_path: str


def kind_of_callable(value: Any) -> Literal["factory", "asgi", "ambiguous"]:
    """A zero-argument callable is a factory; ``(scope, receive, send)`` is ASGI."""
    try:
        signature = inspect.signature(value)
    except (TypeError, ValueError):
        return "ambiguous"
    positional = [
        p for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    required = [p for p in positional if p.default is p.empty]
    variadic = any(p.kind is p.VAR_POSITIONAL for p in signature.parameters.values())
    if not required and not variadic:
        return "factory"
    if len(positional) == 3 and len(required) == 3 and not variadic:
        return "asgi"
    return "ambiguous"


def engineio_path_under(app: Any, prefix: str, where: str) -> str:
    """The request path an ASGIApp reached under ``prefix`` (a mount) answers."""
    path = app.engineio_path
    if path is None:
        raise AppLoadError(
            f"{where}: socketio.ASGIApp(socketio_path=None) takes every path; siocluster "
            "routes by the Engine.IO path, so give one (socketio_path='socket.io')"
        )
    if not prefix or path.startswith(prefix.rstrip("/") + "/"):
        return str(path)
    suggestion = prefix.rstrip("/") + path
    raise AppLoadError(
        f"{where}: the socketio.ASGIApp mounted at {prefix!r} has socketio_path "
        f"{path.strip('/')!r}, but Starlette passes mounted apps the full path, so it "
        f"would answer 404 to every client; use socketio_path={suggestion.strip('/')!r} "
        f"(clients then connect with path {suggestion!r})"
    )


def _mount_prefix(route: Any, prefix: str) -> str | None:
    """The prefix below a Starlette ``Mount``/``Host`` route; None: not one."""
    name = type(route).__name__
    if name == "Mount" and isinstance(getattr(route, "path", None), str):
        return prefix + str(route.path).rstrip("/")
    if name == "Host":
        return prefix
    return None


def find_mounted(value: Any) -> list[tuple[Any, str]]:
    """Every ``engineio.ASGIApp`` inside ``value``, with the mount prefix above it."""
    found: list[tuple[Any, str]] = []
    seen: set[int] = set()

    def walk(obj: Any, prefix: str, depth: int) -> None:
        if obj is None or id(obj) in seen or depth > _MAX_DEPTH:
            return
        seen.add(id(obj))
        if isinstance(obj, engineio.ASGIApp):
            found.append((obj, prefix))
            return
        routes = getattr(obj, "routes", None)
        if isinstance(routes, list):
            for route in routes:
                below = _mount_prefix(route, prefix)
                if below is not None:
                    walk(getattr(route, "app", None), below, depth + 1)
        if inspect.isfunction(obj):
            for cell in obj.__closure__ or ():
                try:
                    walk(cell.cell_contents, prefix, depth + 1)
                except ValueError:  # an empty cell
                    continue
            return
        # Middleware (Starlette's, or any that keeps the wrapped app as .app).
        inner = getattr(obj, "app", None)
        if inner is not None and callable(inner):
            walk(inner, prefix, depth + 1)

    walk(value, "", 0)
    return found


def _from_asgi_app(app: Any, prefix: str, where: str) -> tuple[Any, str]:
    sio = getattr(app, "engineio_server", None)
    if not isinstance(sio, socketio.AsyncServer):
        raise AppLoadError(
            f"{where}: the ASGI app serves a plain engineio server; siocluster serves "
            "Socket.IO (socketio.ASGIApp(socketio.AsyncServer(async_mode='asgi')))"
        )
    if sio.eio.async_mode != "asgi":
        raise AppLoadError(
            f"{where}: socketio.ASGIApp wraps an AsyncServer with "
            f"async_mode={sio.eio.async_mode!r}; create it with async_mode='asgi'"
        )
    return sio, engineio_path_under(app, prefix, where)


def _asgi_shape(value: Any, where: str, module_globals: dict[str, Any] | None) -> Shape | None:
    found = find_mounted(value)
    if not found and module_globals is not None and inspect.isfunction(value):
        # A plain ASGI callable dispatching to an ASGIApp of its own module.
        found = [(v, "") for v in module_globals.values() if isinstance(v, engineio.ASGIApp)]
    distinct = {id(app): (app, prefix) for app, prefix in found}
    if not distinct:
        return None
    if len(distinct) > 1:
        paths = sorted(str(app.engineio_path) for app, _ in distinct.values())
        raise AppLoadError(
            f"{where}: found {len(distinct)} socketio.ASGIApp ({', '.join(paths)}); "
            "siocluster serves one Socket.IO server per app"
        )
    app, prefix = next(iter(distinct.values()))
    sio, path = _from_asgi_app(app, prefix, where)
    return Shape(sio, value, "asgi", path)


def shape_of(value: Any, where: str) -> Shape | None:
    """The shape of an already-built app; None when ``value`` is no app (maybe a factory).

    ``aiohttp`` shapes are resolved by :mod:`worker.app_loader` (they need an
    aiohttp router walk); here they come back with ``engineio_path`` "".
    """
    if isinstance(value, socketio.AsyncServer):
        mode = value.eio.async_mode
        if mode == "asgi":
            return Shape(value, socketio.ASGIApp(value), "asgi", "/socket.io/")
        if mode == "aiohttp":
            return Shape(value, None, "aiohttp", "")
        raise AppLoadError(
            f"{where} is an AsyncServer with async_mode={mode!r}; siocluster serves "
            "async_mode='aiohttp' and async_mode='asgi'"
        )
    if isinstance(value, socketio.Server):
        raise AppLoadError(
            f"{where} is a synchronous socketio.Server (WSGI); siocluster needs "
            "socketio.AsyncServer(async_mode='asgi') or (async_mode='aiohttp')"
        )
    if isinstance(value, engineio.ASGIApp):
        sio, path = _from_asgi_app(value, "", where)
        return Shape(sio, value, "asgi", path)
    if isinstance(value, type) or not callable(value):
        return None
    if inspect.isfunction(value) or inspect.ismethod(value):
        return None  # a factory or a plain ASGI callable: see plain_asgi_shape
    shape = _asgi_shape(value, where, None)
    if shape is None and getattr(value, "routes", None) is not None:
        raise AppLoadError(
            f"{where} is an ASGI app with no socketio.ASGIApp in it: wrap it "
            "(socketio.ASGIApp(sio, other_asgi_app=app)) or mount one "
            "(app.mount('/ws', socketio.ASGIApp(sio, socketio_path='/ws/socket.io')))"
        )
    return shape


def plain_asgi_shape(value: Any, where: str) -> Shape:
    """A function ``(scope, receive, send)``: the ASGIApp it reaches, or an error."""
    globals_ = getattr(value, "__globals__", None)
    shape = _asgi_shape(value, where, globals_ if isinstance(globals_, dict) else None)
    if shape is None:
        raise AppLoadError(
            f"{where} is an ASGI callable, but no socketio.ASGIApp was found in it or in "
            "its module; define the socketio.ASGIApp it calls at module level"
        )
    return shape
