"""App-shape detection and Engine.IO path discovery, on objects built in the test."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import socketio
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Host, Mount

from worker.app_loader import _resolve
from worker.app_shapes import find_mounted, kind_of_callable, shape_of
from worker.exceptions import AppLoadError


def asgi_sio() -> Any:
    return socketio.AsyncServer(async_mode="asgi")


def resolve(value: Any, factory: bool = False) -> Any:
    return asyncio.run(_resolve(value, "m:app", factory=factory))


def test_kind_of_callable() -> None:
    async def asgi(scope: Any, receive: Any, send: Any) -> None: ...
    def factory() -> None: ...
    def factory_with_defaults(name: str = "x") -> None: ...
    def decorated(*args: Any, **kwargs: Any) -> None: ...
    def two(a: Any, b: Any) -> None: ...

    assert kind_of_callable(asgi) == "asgi"
    assert kind_of_callable(factory) == "factory"
    assert kind_of_callable(factory_with_defaults) == "factory"
    assert kind_of_callable(decorated) == "ambiguous"
    assert kind_of_callable(two) == "ambiguous"
    assert kind_of_callable(FastAPI()) == "asgi"


def test_asgiapp_and_wrapped_app() -> None:
    sio = asgi_sio()
    assert shape_of(socketio.ASGIApp(sio), "x") is not None
    app = socketio.ASGIApp(sio, other_asgi_app=FastAPI(), socketio_path="/live/socket.io")
    loaded = resolve(app)
    assert (loaded.sio, loaded.kind, loaded.engineio_path) == (sio, "asgi", "/live/socket.io/")


def test_asyncserver_alone_is_served_at_socket_io() -> None:
    sio = asgi_sio()
    loaded = resolve(sio)
    assert loaded.kind == "asgi" and loaded.engineio_path == "/socket.io/"
    assert isinstance(loaded.app, socketio.ASGIApp) and loaded.app.engineio_server is sio


def test_mounted_under_fastapi_behind_middleware_and_host() -> None:
    sio = asgi_sio()
    api = FastAPI()
    api.mount("/ws", socketio.ASGIApp(sio, socketio_path="ws/socket.io"))
    wrapped = CORSMiddleware(api, allow_origins=["*"])
    loaded = resolve(wrapped)
    assert loaded.sio is sio and loaded.engineio_path == "/ws/socket.io/"
    inner = Starlette(routes=[Mount("/a", routes=[Mount("/b", app=socketio.ASGIApp(
        sio, socketio_path="a/b/socket.io"))])])
    outer = Starlette(routes=[Host("example.test", app=inner)])
    assert [(prefix) for _, prefix in find_mounted(outer)] == ["/a/b"]
    assert resolve(outer).engineio_path == "/a/b/socket.io/"


def test_mount_whose_path_starlette_never_reaches_is_explained() -> None:
    api = FastAPI()
    api.mount("/ws", socketio.ASGIApp(asgi_sio(), socketio_path="socket.io"))
    with pytest.raises(AppLoadError, match=r"socketio_path='ws/socket.io'"):
        resolve(api)


def test_two_servers_or_none_or_wrong_mode() -> None:
    api = FastAPI()
    api.mount("/a", socketio.ASGIApp(asgi_sio(), socketio_path="a/socket.io"))
    api.mount("/b", socketio.ASGIApp(asgi_sio(), socketio_path="b/socket.io"))
    with pytest.raises(AppLoadError, match=r"found 2 socketio.ASGIApp"):
        resolve(api)
    with pytest.raises(AppLoadError, match=r"no socketio.ASGIApp in it"):
        resolve(FastAPI())
    aiohttp_mode = socketio.AsyncServer(async_mode="aiohttp")
    with pytest.raises(AppLoadError, match=r"async_mode='asgi'"):
        resolve(socketio.ASGIApp(aiohttp_mode))
    with pytest.raises(AppLoadError, match=r"WSGI"):
        resolve(socketio.Server())
    with pytest.raises(AppLoadError, match=r"socketio_path=None"):
        resolve(socketio.ASGIApp(asgi_sio(), socketio_path=None))


def test_factories_and_the_flag() -> None:
    sio = asgi_sio()

    def factory() -> Any:
        return socketio.ASGIApp(sio)

    async def async_factory() -> Any:
        return socketio.ASGIApp(sio, socketio_path="x")

    def decorated(*args: Any, **kwargs: Any) -> Any:
        return socketio.ASGIApp(sio)

    assert resolve(factory).sio is sio
    assert resolve(async_factory).engineio_path == "/x/"
    with pytest.raises(AppLoadError, match=r"--factory") as refused:
        resolve(decorated)
    assert "TypeError" not in str(refused.value)
    assert resolve(decorated, factory=True).sio is sio

    async def asgi(scope: Any, receive: Any, send: Any) -> None: ...

    with pytest.raises(AppLoadError, match=r"without --factory"):
        resolve(asgi, factory=True)
    with pytest.raises(AppLoadError, match=r"returned a builtins.int"):
        resolve(lambda: 5)


def test_plain_callable_finds_the_asgiapp_it_closes_over() -> None:
    sio = asgi_sio()
    inner = socketio.ASGIApp(sio)

    def make() -> Any:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            await inner(scope, receive, send)
        return app

    loaded = resolve(make())
    assert loaded.sio is sio and loaded.kind == "asgi"
