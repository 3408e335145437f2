"""``POST /emit`` end to end: a real cluster (master + 2 workers), real clients.

Runs on ``local``, ``redis`` (a real redis-server), ``amqp`` (a real
rabbitmq-server) and ``none``: each target
client gets the message once, the token is required off loopback, bad bodies
get 400 with the reason, and /metrics counts emits by source.
"""

from __future__ import annotations

import asyncio
import os
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import socketio

from tests.cluster import Cluster, start_cluster
from tests.integration.adapter_cluster import wait_for
from tests.redis_server import redis_server_factory

__all__ = ["redis_server_factory"]

pytestmark = pytest.mark.timeout(120)
QUIET_S = 0.4
TOKEN = "s3cret-emit-token"


class Recorder:
    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: dict[tuple[str, str], list[Any]] = defaultdict(list)

        @self.sio.on("*", namespace="*")
        async def any_event(event: str, namespace: str, *args: Any) -> None:
            self.events[(namespace, event)].append(args[0] if len(args) == 1 else list(args))

    def got(self, event: str, namespace: str = "/") -> list[Any]:
        return self.events[(namespace, event)]

    async def connect(self, url: str, rooms: list[str], namespaces: list[str]) -> int:
        await self.sio.connect(url, transports=["websocket"], auth={"rooms": rooms},
                               namespaces=namespaces, wait_timeout=10)
        who = await self.sio.call("whoami", namespace=namespaces[0], timeout=5)
        return int(who["pid"])

    def sid(self) -> str:
        sid = self.sio.get_sid("/")
        assert sid is not None
        return sid


@pytest.fixture(scope="module", params=["local", "redis", "amqp", "none"])
def cluster(request: pytest.FixtureRequest, tmp_path_factory: Any) -> Iterator[Cluster]:
    config = f'[admin]\nhost = "0.0.0.0"\ntoken = "{TOKEN}"\n'
    env = {"SIOCLUSTER_ADAPTER_BACKEND": request.param}
    if request.param == "redis":
        server = request.getfixturevalue("redis_server_factory")()
        env["SIOCLUSTER_ADAPTER_REDIS_URL"] = server.url
    if request.param == "amqp":
        env["SIOCLUSTER_ADAPTER_AMQP_URL"] = request.getfixturevalue("rabbitmq_server").url
        env["SIOCLUSTER_ADAPTER_CHANNEL"] = f"sioc-http-emit-{os.getpid()}"
    tmp = tmp_path_factory.mktemp(f"emit-{request.param}")
    with start_cluster("emit_app:app", workers=2, tmp_path=tmp, config=config, env=env,
                       token=TOKEN) as c:
        yield c


async def _clients(cluster: Cluster) -> tuple[list[Recorder], set[int]]:
    clients, pids = [], set()
    for i in range(4):
        r = Recorder()
        rooms = ["red"] if i % 2 == 0 else []
        pids.add(await r.connect(cluster.url, rooms, ["/", "/chat"]))
        clients.append(r)
    return clients, pids


def test_post_emit_reaches_each_target_client_once(cluster: Cluster) -> None:
    async def main() -> None:
        clients, pids = await _clients(cluster)
        try:
            assert len(pids) == 2, "clients should be on both workers"
            a, b, c, d = clients  # a and c in "red"
            post = cluster.admin
            assert await asyncio.to_thread(post, "/emit", "POST",
                                           {"event": "all", "data": {"n": 1}}) == \
                (200, {"ok": True, "workers": 1 if "none" not in _backend(cluster) else 2})
            await asyncio.to_thread(post, "/emit", "POST",
                                    {"event": "red", "data": "r", "room": "red"})
            await asyncio.to_thread(post, "/emit", "POST",
                                    {"event": "red_but_a", "args": [1, 2], "rooms": ["red"],
                                     "except": [a.sid()]})
            await asyncio.to_thread(post, "/emit", "POST",
                                    {"event": "chat", "namespace": "/chat", "except": "red"})
            await asyncio.to_thread(post, "/emit", "POST", {"event": "to_d", "room": d.sid()})
            await wait_for(lambda: all(x.got("all") for x in clients))
            await wait_for(lambda: c.got("red_but_a") and d.got("to_d")
                           and b.got("chat", "/chat") and d.got("chat", "/chat"))
            await asyncio.sleep(QUIET_S)
            for x in clients:
                assert x.got("all") == [{"n": 1}]
            assert a.got("red") == c.got("red") == ["r"]
            assert b.got("red") == d.got("red") == []
            assert c.got("red_but_a") == [[1, 2]]
            assert a.got("red_but_a") == b.got("red_but_a") == d.got("red_but_a") == []
            assert b.got("chat", "/chat") == d.got("chat", "/chat") == [[]]  # no argument
            assert a.got("chat", "/chat") == c.got("chat", "/chat") == []
            assert all(x.got("chat") == [] for x in clients)
            assert len(d.got("to_d")) == 1
            assert a.got("to_d") == b.got("to_d") == c.got("to_d") == []
            # An emit of the app itself counts as internal (with an adapter: the
            # "none" backend leaves python-socketio's own manager, uncounted).
            adapter = _backend(cluster) != "none"
            if adapter:
                await a.sio.emit("shout", "hey")
                await wait_for(lambda: all(x.got("shout") == ["hey"] for x in clients))

            def counted() -> bool:
                code, text = cluster.admin("/metrics")
                internal = 'siocluster_emits_total{source="internal"} 1.0' in text
                return code == 200 and 'siocluster_emits_total{source="http"} 5.0' in text \
                    and (internal or not adapter)

            await wait_for(counted, timeout_s=5)
        finally:
            await asyncio.gather(*(x.sio.disconnect() for x in clients), return_exceptions=True)

    asyncio.run(main())


def _backend(cluster: Cluster) -> str:
    return str(cluster.status()["adapter"]["backend"])


@pytest.mark.parametrize(("body", "reason"), [
    (b"", "empty body"),
    (b"{nope", "not JSON"),
    (b"[1]", "Expected `object`"),
    (b'{"data": 1}', "missing required field `event`"),
    (b'{"event": 5}', "Expected `str`"),
    (b'{"event": "e", "rooms": "r"}', "Expected `array`"),
    (b'{"event": "e", "room": "a", "rooms": ["b"]}', "not both"),
    (b'{"event": "e", "data": 1, "args": [1]}', "not both"),
    (b'{"event": "e", "namespace": "chat"}', "must start with '/'"),
    (b'{"event": "connect"}', "reserved"),
    (b'{"event": "e", "colour": "red"}', "unknown field `colour`"),
])
def test_bad_bodies_get_400_with_the_reason(cluster: Cluster, body: bytes, reason: str) -> None:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(cluster.admin_url + "/emit", data=body, method="POST",
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=5)
    assert info.value.code == 400
    import json

    assert reason in json.loads(info.value.read())["error"]


def test_token_is_required_off_loopback(cluster: Cluster) -> None:
    cluster.token = ""
    try:
        assert cluster.admin("/emit", "POST", {"event": "x"})[0] == 401
        cluster.token = "wrong"
        assert cluster.admin("/emit", "POST", {"event": "x"})[0] == 401
    finally:
        cluster.token = TOKEN
    assert cluster.admin("/emit", "POST", {"event": "x"})[0] == 200


def test_an_admin_listener_off_loopback_without_a_token_does_not_start(tmp_path: Path) -> None:
    from tests.cluster import run_cli

    out = run_cli("run", "emit_app:app", "--admin-host", "0.0.0.0", "--workers", "1",
                  env={"SIOCLUSTER_ADMIN_TOKEN": ""}, timeout=30)
    assert out.returncode != 0
    assert "token" in (out.stdout + out.stderr)

