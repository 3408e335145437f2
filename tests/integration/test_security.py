"""[auth], per-socket rate limits, CORS and typed events against a live cluster."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio

from tests import eio
from tests.cluster import free_port, run_cli, start_cluster
from tests.worker.tokens import AUDIENCE, ISSUER, Keys, make_keys, rs256

APP = "secure_app:app"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))


def secure_config(keys: Keys, *, rate: float = 0.0, action: str = "drop",
                  origins: str = "[]") -> str:
    return f"""
[auth]
enabled = true
key_file = "{keys.pem_file}"
algorithms = ["RS256"]
audience = "{AUDIENCE}"
issuer = "{ISSUER}"
leeway_s = 1.0

[limits]
event_rate_per_socket = {rate}
event_rate_action = "{action}"

[socketio]
cors_allowed_origins = {origins}
"""


@contextlib.asynccontextmanager
async def connected(url: str, **connect: Any) -> AsyncIterator[socketio.AsyncClient]:
    c = socketio.AsyncClient(reconnection=False)
    connect.setdefault("wait_timeout", 10)
    await c.connect(url, **connect)
    try:
        yield c
    finally:
        # A polling client waits out its long-poll on disconnect; don't.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(c.disconnect(), 1.0)


async def refusal(url: str, **connect: Any) -> Any:
    c = socketio.AsyncClient(reconnection=False)
    errors: list[Any] = []
    c.on("connect_error", lambda data=None: errors.append(data))
    with pytest.raises(socketio.exceptions.ConnectionError):
        await c.connect(url, wait_timeout=10, **connect)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(c.disconnect(), 2.0)
    assert len(errors) == 1, errors
    return errors[0]


@pytest.mark.parametrize("async_mode", ["aiohttp", "asgi"])
def test_jwt_auth_rate_limit_and_typed_events(keys: Keys, tmp_path: Path,
                                               async_mode: str) -> None:
    config = secure_config(keys, rate=5.0)
    env = {"SECURE_APP_ASYNC_MODE": async_mode}
    with start_cluster(APP, workers=2, config=config, tmp_path=tmp_path, env=env) as cluster:
        url = cluster.url

        async def main() -> None:
            pids: set[int] = set()
            # A good token, over each transport and from each place; both workers.
            for transports in (["websocket"], ["polling"]):
                for sub in ("a", "b"):
                    async with connected(url, transports=transports,
                                         auth={"token": rs256(keys, sub=sub)}) as c:
                        who = await c.call("whoami", timeout=5)
                        assert who["claims"]["sub"] == who["helper"]["sub"] == sub
                        assert who["auth_keys"] == ["token"]
                        pids.add(who["pid"])
            assert len(pids) == 2, "both workers verified tokens"
            headers = {"Authorization": f"Bearer {rs256(keys, sub='hdr')}"}
            async with connected(url, headers=headers, transports=["polling"]) as c:
                assert (await c.call("whoami", timeout=5))["claims"]["sub"] == "hdr"
            async with connected(f"{url}?token={rs256(keys, sub='q')}",
                                 transports=["websocket"]) as c:
                assert (await c.call("whoami", timeout=5))["claims"]["sub"] == "q"

            # Refusals: a connect_error with the reason, and the worker lives on.
            expired = rs256(keys, exp=int(time.time()) - 120)
            assert await refusal(url, auth={"token": expired}, transports=["websocket"]) == {
                "message": "invalid token: expired", "data": {"reason": "expired"}}
            # Over polling, read the CONNECT_ERROR packet itself (python-socketio's
            # polling client waits out a long-poll after a refusal).
            async with aiohttp.ClientSession() as http:
                sid = (await eio.handshake(http, url))["sid"]
                assert await eio.post(http, url, sid, "40") == 200
                assert await eio.poll(http, url, sid) == (
                    200, '44{"message":"missing token","data":{"reason":"missing"}}')
            wrong = rs256(keys, aud="another-service")
            assert (await refusal(url, auth={"token": wrong}))["message"] == (
                "invalid token: wrong audience")

            # Typed events.
            async with connected(url, auth={"token": rs256(keys)},
                                 transports=["websocket"]) as c:
                ok = await c.call("chat message", {"room": "r", "text": "hello"}, timeout=5)
                assert ok == {"ok": True, "room": "r", "length": 5}
                bad = await c.call("chat message", {"room": "r", "text": 5}, timeout=5)
                assert bad == {"error": "invalid_payload",
                               "detail": "Expected `str`, got `int`", "path": "$.text"}

            # Rate limit (5/s, burst 10), action "drop".
            async with connected(url, auth={"token": rs256(keys)},
                                 transports=["websocket"]) as c:
                notices: list[Any] = []
                c.on("rate_limited", notices.append)
                for n in range(40):
                    await c.emit("tick", n)
                await asyncio.sleep(0.5)  # "ticks" needs a token too
                handled = await c.call("ticks", timeout=5)
                assert 10 <= handled <= 13, handled
                assert notices and notices[0]["limit_per_s"] == 5.0
                assert notices[0]["burst"] == 10.0 and notices[0]["event"] == "tick"
                assert c.connected

        asyncio.run(main())
        assert cluster.worker_pids() and cluster.proc.poll() is None
        log = cluster.log()
        assert "Traceback" not in log, log


def test_rate_limit_disconnect_action(keys: Keys, tmp_path: Path) -> None:
    config = secure_config(keys, rate=2.0, action="disconnect")
    with start_cluster(APP, workers=1, config=config, tmp_path=tmp_path) as cluster:

        async def main() -> None:
            async with connected(cluster.url, auth={"token": rs256(keys)},
                                 transports=["websocket"]) as c:
                reasons: list[Any] = []
                c.on("disconnect", lambda reason=None: reasons.append(reason))
                for n in range(10):
                    await c.emit("tick", n)
                deadline = time.monotonic() + 5
                while c.connected and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                assert not c.connected
                assert reasons == [socketio.AsyncClient.reason.SERVER_DISCONNECT]
            # The client may come back (and be limited again); the worker is fine.
            async with connected(cluster.url, auth={"token": rs256(keys)}) as c:
                assert await c.call("echo", "still here", timeout=5) == "still here"

        asyncio.run(main())


def test_none_algorithm_stops_the_cluster_naming_the_key(keys: Keys) -> None:
    started = time.monotonic()
    config = Path(keys.pem_file).parent / "none.toml"
    config.write_text(secure_config(keys).replace('algorithms = ["RS256"]',
                                                  'algorithms = ["none"]'))
    result = run_cli("run", APP, "--workers", "2", "--port", str(free_port()),
                     "--admin-port", str(free_port()), "--config", str(config))
    assert result.returncode == 2, result.stderr  # refused with the config, before any worker
    assert "auth.algorithms: 'none' is refused" in result.stderr, result.stderr
    assert str(config) in result.stderr
    assert result.stderr.count("restarting") == 0
    assert time.monotonic() - started < 20


# CORS: the balancer keeps Host, so python-engineio's same-origin check works.


def refused_status(app: str, websocket: bool) -> int:
    """python-engineio's ASGI driver refuses a WebSocket by closing it before accepting,
    which ASGI servers (uvicorn) answer with 403; over HTTP, and on aiohttp, it is 400."""
    return 403 if websocket and app != "echo_app:app" else 400


async def handshake_status(url: str, origin: str | None, websocket: bool = False) -> int:
    headers = {"Origin": origin} if origin else {}
    async with aiohttp.ClientSession() as http:
        if websocket:
            ws_url = url.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket"
            try:
                ws = await http.ws_connect(ws_url, headers=headers)
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status
            await ws.close()
            return 101
        async with http.get(f"{url}/socket.io/?EIO=4&transport=polling",
                            headers=headers) as resp:
            await resp.read()
            return resp.status


@pytest.mark.parametrize("app", ["echo_app:app", "fastapi_wrapped:app"])
def test_cors_same_origin_by_default(tmp_path: Path, app: str) -> None:
    with start_cluster(app, workers=2, tmp_path=tmp_path) as cluster:
        url = cluster.url

        async def main() -> None:
            for websocket in (False, True):
                ok = 101 if websocket else 200
                refused = refused_status(app, websocket)
                assert await handshake_status(url, None, websocket) == ok
                assert await handshake_status(url, url, websocket) == ok  # same origin
                assert await handshake_status(url, "http://evil.test", websocket) == refused
                assert await handshake_status(
                    url, f"http://127.0.0.1:{cluster.port + 1}", websocket) == refused

        asyncio.run(main())


@pytest.mark.parametrize("app", ["echo_app:app", "fastapi_wrapped:app"])
def test_cors_allowlist(tmp_path: Path, app: str) -> None:
    config = '[socketio]\ncors_allowed_origins = ["https://app.test"]\n'
    with start_cluster(app, workers=2, config=config, tmp_path=tmp_path) as cluster:
        url = cluster.url

        async def main() -> None:
            for websocket in (False, True):
                ok = 101 if websocket else 200
                refused = refused_status(app, websocket)
                assert await handshake_status(url, "https://app.test", websocket) == ok
                assert await handshake_status(url, "http://evil.test", websocket) == refused
                # An explicit list replaces same-origin.
                assert await handshake_status(url, url, websocket) == refused
            async with aiohttp.ClientSession() as http, http.get(
                    f"{url}/socket.io/?EIO=4&transport=polling",
                    headers={"Origin": "https://app.test"}) as resp:
                assert resp.headers["Access-Control-Allow-Origin"] == "https://app.test"

        asyncio.run(main())
