"""The contract worker/uvicorn_compat.py relies on; a failure names what uvicorn changed."""

from __future__ import annotations

import asyncio
import inspect

import uvicorn
import uvicorn.server

from worker.uvicorn_compat import ServerState, make_config, protocol_factory


async def app(scope: object, receive: object, send: object) -> None: ...


def test_server_state_has_connections_tasks_and_default_headers() -> None:
    assert hasattr(uvicorn.server, "ServerState"), "uvicorn.server.ServerState is gone"
    state = ServerState()
    for name in ("connections", "tasks", "default_headers"):
        assert hasattr(state, name), f"uvicorn ServerState has no {name!r} any more"


def test_config_load_resolves_protocol_classes_and_app() -> None:
    config = make_config(app, access_log=False, ws_max_size=1000)
    for name in ("http_protocol_class", "ws_protocol_class", "loaded_app", "encoded_headers",
                 "date_header"):
        assert hasattr(config, name), f"uvicorn Config.load() no longer sets {name!r}"
    assert config.http_protocol_class.__name__ == "HttpToolsProtocol", (
        "http='httptools' no longer gives uvicorn's HttpToolsProtocol")
    assert config.ws_max_size == 1000


def test_protocol_takes_config_server_state_app_state_and_shuts_down() -> None:
    config = make_config(app, access_log=False, ws_max_size=None)
    params = inspect.signature(config.http_protocol_class.__init__).parameters
    for name in ("config", "server_state", "app_state"):
        assert name in params, f"uvicorn's HTTP protocol no longer takes {name}="
    assert callable(getattr(config.http_protocol_class, "shutdown", None)), (
        "uvicorn's HTTP protocol has no shutdown() any more")

    async def main() -> None:
        protocol = protocol_factory(config, ServerState(), {})()
        assert isinstance(protocol, asyncio.Protocol)

    asyncio.run(main())


def test_uvicorn_version_is_the_one_pinned() -> None:
    major, minor = (int(x) for x in uvicorn.__version__.split(".")[:2])
    assert (major, minor) < (0, 55), f"uvicorn {uvicorn.__version__}: recheck this contract"
