"""install_guards on a real python-socketio server with real clients (no cluster)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any

import pytest
import socketio

from supervisor.config import config_from_dict
from supervisor.exceptions import ConfigError
from tests.worker.live_server import client, serve
from tests.worker.tokens import AUDIENCE, ISSUER, Keys, make_keys, rs256
from worker.auth import CLAIMS_KEY, ENVIRON_CLAIMS_KEY, get_claims
from worker.config import WorkerConfig
from worker.guards import RATE_LIMITED_EVENT, Guards, install_guards


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))


def auth_config(keys: Keys, **limits: Any) -> WorkerConfig:
    data: dict[str, Any] = {"auth": {"enabled": True, "key_file": str(keys.pem_file),
                                     "algorithms": ["RS256"], "audience": AUDIENCE,
                                     "issuer": ISSUER}}
    if limits:
        data["limits"] = limits
    return config_from_dict(data).for_worker()


def refusal_catcher(c: socketio.AsyncClient) -> list[Any]:
    errors: list[Any] = []
    c.on("connect_error", lambda data=None: errors.append(data))
    return errors


async def refused(url: str, **connect: Any) -> Any:
    c = socketio.AsyncClient(reconnection=False)
    errors = refusal_catcher(c)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await c.connect(url, transports=["websocket"], wait_timeout=5, **connect)
    assert len(errors) == 1, errors
    return errors[0]


# Auth


def test_token_from_each_place_reaches_the_app(keys: Keys) -> None:
    sio = socketio.AsyncServer(async_mode="aiohttp")
    seen: list[dict[str, Any]] = []

    @sio.event
    async def connect(sid: str, environ: dict[str, Any], auth: Any) -> None:
        # The app's own handler, with its usual arguments; it replaces the session.
        seen.append({"claims": environ[ENVIRON_CLAIMS_KEY], "auth": auth,
                     "session": dict(await sio.get_session(sid))})
        await sio.save_session(sid, {"mine": True})

    @sio.event
    async def whoami(sid: str) -> dict[str, Any]:
        session = await sio.get_session(sid)
        return {"session_sub": session[CLAIMS_KEY]["sub"], "mine": session["mine"],
                "helper_sub": (await get_claims(sio, sid) or {}).get("sub")}

    guards = install_guards(sio, auth_config(keys))

    async def run() -> None:
        async with serve(sio) as url:
            async with client(url, auth={"token": rs256(keys, sub="by-auth")}) as c:
                assert await c.call("whoami", timeout=5) == {
                    "session_sub": "by-auth", "mine": True, "helper_sub": "by-auth"}
            header = {"Authorization": f"Bearer {rs256(keys, sub='by-header')}"}
            async with client(url, headers=header) as c:
                assert (await c.call("whoami", timeout=5))["session_sub"] == "by-header"
            async with client(f"{url}?token={rs256(keys, sub='by-query')}") as c:
                assert (await c.call("whoami", timeout=5))["helper_sub"] == "by-query"

    asyncio.run(run())
    assert [s["claims"]["sub"] for s in seen] == ["by-auth", "by-header", "by-query"]
    assert seen[0]["auth"] == {"token": seen[0]["auth"]["token"]}
    assert seen[1]["auth"] is None
    assert all(s["session"] == {CLAIMS_KEY: s["claims"]} for s in seen)
    assert guards.status()["auth_ok"] == 3
    assert guards.status()["auth_failed"] == 0


def test_refusals_reach_the_client_with_a_reason(keys: Keys) -> None:
    sio = socketio.AsyncServer(async_mode="aiohttp")
    handler_calls: list[str] = []

    @sio.event
    async def connect(sid: str, environ: dict[str, Any], auth: Any) -> None:
        handler_calls.append(sid)

    guards = install_guards(sio, auth_config(keys))

    async def run() -> None:
        async with serve(sio) as url:
            expired = rs256(keys, exp=int(time.time()) - 60)
            assert await refused(url, auth={"token": expired}) == {
                "message": "invalid token: expired", "data": {"reason": "expired"}}
            assert (await refused(url))["message"] == "missing token"
            forged = rs256(keys, key=keys.other)
            assert (await refused(url, auth={"token": forged}))["data"] == {
                "reason": "bad_signature"}
            assert (await refused(url, auth={"token": 42}))["data"] == {"reason": "malformed"}
            # The server is fine afterwards.
            async with client(url, auth={"token": rs256(keys)}) as c:
                assert c.connected

    asyncio.run(run())
    assert len(handler_calls) == 1, "the app's handler runs only after a good token"
    status = guards.status()
    assert status["auth_failed"] == 4
    assert (status["auth_failed_expired"], status["auth_failed_missing"],
            status["auth_failed_bad_signature"], status["auth_failed_malformed"]) == (1, 1, 1, 1)
    assert status["auth_ok"] == 1


def test_legacy_handler_and_no_handler_and_namespace_classes(keys: Keys) -> None:
    sio = socketio.AsyncServer(async_mode="aiohttp", namespaces="*")
    calls: list[str] = []

    @sio.event
    async def connect(sid: str, environ: dict[str, Any]) -> None:  # no auth argument
        calls.append("legacy")

    class Game(socketio.AsyncNamespace):
        async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any) -> None:
            calls.append("class")

        async def on_who(self, sid: str) -> Any:
            return (await get_claims(self.server, sid, namespace="/game") or {}).get("sub")

    sio.register_namespace(Game("/game"))
    guards = install_guards(sio, auth_config(keys))
    header = {"Authorization": f"Bearer {rs256(keys, sub='h')}"}

    async def run() -> None:
        async with serve(sio) as url:
            async with client(url, headers=header):
                pass
            async with client(url, headers=header, namespaces=["/game", "/free"]) as c:
                assert await c.call("who", namespace="/game", timeout=5) == "h"
            # Each namespace needs the token: /free has no handler at all.
            c = socketio.AsyncClient(reconnection=False)
            with pytest.raises(socketio.exceptions.ConnectionError):
                await c.connect(url, namespaces=["/free"], transports=["websocket"],
                                wait_timeout=5)

    asyncio.run(run())
    assert calls == ["legacy", "class"]
    # The legacy handler is called twice by python-socketio (with, then without,
    # auth); the token is verified once.
    assert guards.status()["auth_ok"] == 3
    assert guards.status()["auth_failed_missing"] == 1
    assert guards._retry_claims == {}


def test_the_admin_ui_namespace_is_exempt_from_the_jwt(keys: Keys) -> None:
    """The Admin UI cannot send a JWT; its namespace has its own password (worker.admin_ui)."""
    sio = socketio.AsyncServer(async_mode="aiohttp")
    admitted: list[Any] = []

    @sio.on("connect", namespace="/admin")
    async def admin_connect(sid: str, environ: dict[str, Any], auth: Any) -> None:
        admitted.append(auth)

    config = dataclasses.replace(auth_config(keys), socketio_admin_ui=True,
                                 socketio_admin_ui_secret="pw")
    install_guards(sio, config)

    async def run() -> None:
        async with serve(sio) as url:
            async with client(url, namespaces=["/admin"], auth={"password": "pw"}) as c:
                assert c.connected
            assert (await refused(url))["message"] == "missing token"  # "/" still needs one

    asyncio.run(run())
    assert admitted == [{"password": "pw"}]


def test_none_algorithm_is_refused_with_the_config(keys: Keys) -> None:
    with pytest.raises(ConfigError, match=r"auth\.algorithms: 'none' is refused"):
        config_from_dict({"auth": {"enabled": True, "key_file": str(keys.pem_file),
                                   "algorithms": ["none"]}})


def test_auth_disabled_touches_nothing() -> None:
    sio = socketio.AsyncServer(async_mode="aiohttp")
    trigger, handle = sio._trigger_event, sio._handle_event
    guards = install_guards(sio, WorkerConfig())
    assert (sio._trigger_event, sio._handle_event) == (trigger, handle)
    assert guards.status() == {"typed_invalid_payload": 0, "typed_ok": 0}


# Rate limit


def rate_server(action: str) -> tuple[socketio.AsyncServer, Guards, list[int]]:
    sio = socketio.AsyncServer(async_mode="aiohttp")
    handled: list[int] = []

    @sio.event
    async def ping(sid: str, n: int) -> None:
        handled.append(n)

    config = config_from_dict({"limits": {"event_rate_per_socket": 5.0,
                                          "event_rate_action": action}})
    return sio, install_guards(sio, config.for_worker()), handled


def test_rate_limit_drop(tmp_path: Path) -> None:
    sio, guards, handled = rate_server("drop")
    notices: list[Any] = []

    async def run() -> None:
        async with serve(sio) as url, client(url) as c:
            c.on(RATE_LIMITED_EVENT, notices.append)
            for n in range(40):
                await c.emit("ping", n)
            await asyncio.sleep(0.5)
            assert c.connected, "drop keeps the socket"
            assert len(guards.limiter or ()) == 1
        await asyncio.sleep(0.2)
        assert len(guards.limiter or ()) == 0, "the bucket is forgotten on disconnect"

    asyncio.run(run())
    # The burst (10) plus what refilled while sending.
    assert 10 <= len(handled) <= 14, handled
    assert handled[:10] == list(range(10))
    assert notices and notices[0] == {"event": "ping", "limit_per_s": 5.0, "burst": 10.0,
                                      "action": "drop"}
    assert len(notices) <= 2, "notices are rate limited too"
    status = guards.status()
    assert status["rate_limited"] == status["rate_limited_dropped"] == 40 - len(handled)
    assert status["rate_limited_disconnects"] == 0


def test_rate_limit_disconnect() -> None:
    sio, guards, handled = rate_server("disconnect")
    notices: list[Any] = []
    reasons: list[Any] = []

    async def run() -> None:
        async with serve(sio) as url, client(url) as c:
            c.on(RATE_LIMITED_EVENT, notices.append)
            c.on("disconnect", lambda reason=None: reasons.append(reason))
            for n in range(15):
                await c.emit("ping", n)
            deadline = time.monotonic() + 5
            while c.connected and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert not c.connected

    asyncio.run(run())
    assert len(handled) == 10
    assert notices[0]["action"] == "disconnect"
    assert reasons == [socketio.AsyncClient.reason.SERVER_DISCONNECT]
    assert guards.status()["rate_limited_disconnects"] == 1


# CORS


@pytest.mark.parametrize(
    ("configured", "app_value", "expected"),
    [
        ([], None, None),
        (["*"], None, "*"),
        (["https://a.test", "*"], None, "*"),
        (["https://a.test"], None, ["https://a.test"]),
        ([], "https://app.test", "https://app.test"),  # the app's own choice stays
        (["https://a.test"], "*", ["https://a.test"]),  # the operator's wins
    ],
)
def test_cors_setting(configured: list[str], app_value: Any, expected: Any) -> None:
    sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins=app_value)
    install_guards(sio, config_from_dict(
        {"socketio": {"cors_allowed_origins": configured}}).for_worker())
    assert sio.eio.cors_allowed_origins == expected
