"""The cross-worker adapter, end to end: 3 worker processes, real clients, both backends.

Every test runs against ``local`` (Unix-socket mesh), ``redis`` (a real
redis-server) and ``amqp`` (a real rabbitmq-server, one per session).
Clients are pinned to workers by port; operations are issued on a *different*
worker than the one holding the target socket.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from typing import Any

import pytest
import socketio

from tests.cluster import start_cluster
from tests.integration.adapter_cluster import Client, Cluster, wait_for
from tests.rabbitmq_server import RabbitMQServer
from tests.redis_server import redis_server_factory

__all__ = ["redis_server_factory"]

pytestmark = pytest.mark.timeout(90)

QUIET_S = 0.3  # how long "nothing else arrives" is watched for


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture(scope="module", params=["local", "redis", "redis-hosts", "amqp"])
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    redis: Any = None
    if request.param == "redis":
        redis = request.getfixturevalue("redis_server_factory")()
        c = Cluster("redis", 3, redis_url=redis.url)
    elif request.param == "redis-hosts":
        # Several hosts: each worker a host of its own; sids name their host, rooms
        # are dynamic channels.
        redis = request.getfixturevalue("redis_server_factory")()
        c = Cluster("redis", 3, redis_url=redis.url, extra=("--host-prefix", "h"))
    elif request.param == "amqp":
        redis = request.getfixturevalue("rabbitmq_server")  # the broker, whichever it is
        # A channel of its own: the session's broker keeps durable queues.
        c = Cluster("amqp", 3, amqp_url=redis.url,
                    extra=("--channel", f"sioc-adapter-{id(request)}"))
    else:
        c = Cluster("local", 3)
    c.redis = redis  # type: ignore[attr-defined]
    try:
        c.start()
        run(c.wait_mesh())
        yield c
    finally:
        c.stop()


async def _close(*clients: Client) -> None:
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


def test_broadcast_reaches_every_client_exactly_once(cluster: Cluster) -> None:
    async def main() -> None:
        clients = [await cluster.client(slot) for slot in (0, 1, 2, 0)]
        chat = [await cluster.client(slot, namespaces=["/chat"]) for slot in (1, 2)]
        try:
            await cluster.op(1, "emit", event="news", data="hello")
            await cluster.op(2, "emit", event="news", data="chat", namespace="/chat")
            await wait_for(lambda: all(c.got("news") for c in clients))
            await wait_for(lambda: all(c.got("news", "/chat") for c in chat))
            await asyncio.sleep(QUIET_S)
            for c in clients:
                assert c.got("news") == ["hello"]
                assert c.got("news", "/chat") == []
            for c in chat:
                assert c.got("news", "/chat") == ["chat"]
                assert c.got("news") == []
        finally:
            await _close(*clients, *chat)

    run(main())


def test_emit_to_sid_rooms_and_skip_sid(cluster: Cluster) -> None:
    async def main() -> None:
        a = await cluster.client(0, auth={"rooms": ["red"]})
        b = await cluster.client(1, auth={"rooms": ["blue"]})
        c = await cluster.client(2, auth={"rooms": ["red", "blue"]})
        try:
            await cluster.op(2, "emit", event="m", data="to-a", to=a.sid())
            await cluster.op(0, "emit", event="m", data="red+blue-c",
                             to=["red", "blue"], skip_sid=c.sid())
            await cluster.op(1, "emit", event="m", data="red", to="red")
            await cluster.op(0, "broadcast", event="m", data="not-blue",
                             **{"except": ["blue"]})
            payload = {"b64": base64.b64encode(b"\x00\xffbin").decode()}
            await cluster.op(0, "emit", event="bin", data=payload, to=b.sid())
            await wait_for(lambda: len(a.got("m")) == 4 and len(b.got("m")) == 1
                           and len(c.got("m")) == 1 and b.got("bin"))
            await asyncio.sleep(QUIET_S)
            # Order is kept per sending worker only: compare as sets of messages.
            assert sorted(a.got("m")) == sorted(["to-a", "red+blue-c", "red", "not-blue"])
            assert b.got("m") == ["red+blue-c"]
            assert c.got("m") == ["red"]
            assert b.got("bin") == [b"\x00\xffbin"]

            # A socket on the emitting worker is served without any frame leaving.
            before = (await cluster.op(0, "status"))["sent"]
            await cluster.op(0, "emit", event="m", data="local", to=a.sid())
            await wait_for(lambda: a.got("m")[-1:] == ["local"])
            assert (await cluster.op(0, "status"))["sent"] == before
        finally:
            await _close(a, b, c)

    run(main())


async def _rooms_of(cluster: Cluster, slot: int, sid: str) -> list[str]:
    for s in await cluster.op(slot, "fetch", room=sid):
        if s["id"] == sid:
            return list(s["rooms"])
    return []


def test_remote_enter_leave_close_room(cluster: Cluster) -> None:
    async def main() -> None:
        a = await cluster.client(0)
        sid = a.sid()
        try:
            await cluster.op(1, "enter_room", sid=sid, room="green")
            deadline = time.monotonic() + 5
            while "green" not in await _rooms_of(cluster, 2, sid):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            await cluster.op(2, "emit", event="g", data=1, to="green")
            await wait_for(lambda: a.got("g") == [1])

            await cluster.op(2, "leave_room", sid=sid, room="green")
            while "green" in await _rooms_of(cluster, 1, sid):
                await asyncio.sleep(0.02)
            await cluster.op(1, "emit", event="g", data=2, to="green")

            await cluster.op(1, "enter_room", sid=sid, room="green")
            while "green" not in await _rooms_of(cluster, 2, sid):
                await asyncio.sleep(0.02)
            await cluster.op(2, "close_room", room="green")
            while "green" in await _rooms_of(cluster, 1, sid):
                await asyncio.sleep(0.02)
            await cluster.op(1, "emit", event="g", data=3, to="green")
            await asyncio.sleep(QUIET_S)
            assert a.got("g") == [1]
        finally:
            await _close(a)

    run(main())


def test_call_and_callbacks_across_workers(cluster: Cluster) -> None:
    async def main() -> None:
        a = await cluster.client(0)
        try:
            assert await cluster.op(2, "call", event="ask", data=7, to=a.sid()) == {
                "answer": 7, "slot": 0}
            raw = {"b64": base64.b64encode(b"\x01\x02").decode()}
            answer = await cluster.op(1, "call", event="ask", data=raw, to=a.sid())
            assert answer == {"answer": raw, "slot": 0}
            got = await cluster.op(1, "emit_callback", event="ask", data="cb", to=a.sid())
            assert got == [{"answer": "cb", "slot": 0}]
        finally:
            await _close(a)

    run(main())


def test_disconnect_socket_on_another_worker(cluster: Cluster) -> None:
    async def main() -> None:
        a = await cluster.client(2)
        b = await cluster.client(0)
        try:
            await cluster.op(1, "disconnect", sid=a.sid())
            await asyncio.wait_for(a.disconnected.wait(), 5)
            ids = {s["id"] for s in await cluster.op(1, "fetch")}
            assert b.sid() in ids
            assert not b.disconnected.is_set()
        finally:
            await _close(a, b)

    run(main())


def test_fetch_sockets_across_workers(cluster: Cluster) -> None:
    async def main() -> None:
        a = await cluster.client(0, auth={"rooms": ["fx"], "user": "ann"})
        b = await cluster.client(1, auth={"rooms": ["fx"], "user": "bob"})
        c = await cluster.client(2, auth={"user": "cy"})
        try:
            in_fx = await cluster.op(1, "fetch", room="fx")
            assert {s["id"]: s["auth"]["user"] for s in in_fx} == {
                a.sid(): "ann", b.sid(): "bob"}
            by_id = {s["id"]: s for s in in_fx}
            assert set(by_id[a.sid()]["rooms"]) == {a.sid(), "fx"}
            # "<slot>.<gen>..." ("<host>-<slot>.<gen>" when several hosts)
            assert by_id[a.sid()]["node"].rpartition("-")[2].startswith("0.")
            assert by_id[b.sid()]["query"]["transport"] == "websocket"

            everyone = {s["id"] for s in await cluster.op(2, "fetch")}
            assert {a.sid(), b.sid(), c.sid()} <= everyone
            not_fx = {s["id"] for s in await cluster.op(0, "fetch", **{"except": ["fx"]})}
            assert c.sid() in not_fx and a.sid() not in not_fx and b.sid() not in not_fx
            one = await cluster.op(2, "fetch", room=a.sid())
            assert [s["id"] for s in one] == [a.sid()]
            # The session travels as Node's socket.data does (builtins only).
            assert one[0]["data"] == {"user": "ann", "seen": [1, 2]}
            mine = await cluster.op(0, "fetch", room=a.sid())  # on its own worker
            assert mine[0]["data"] == {"user": "ann", "seen": [1, 2]}
            d = await cluster.client(2, auth={"user": "opaque"})
            try:
                [opaque] = await cluster.op(0, "fetch", room=d.sid())
                assert opaque["data"] is None and opaque["id"] == d.sid()
            finally:
                await _close(d)
        finally:
            await _close(a, b, c)

    run(main())


def test_sockets_join_leave_and_disconnect_by_selector(cluster: Cluster) -> None:
    async def main() -> None:
        a = await cluster.client(0, auth={"rooms": ["sel"]})
        b = await cluster.client(1, auth={"rooms": ["sel"]})
        c = await cluster.client(2)

        async def members(room: str) -> set[str]:
            return {s["id"] for s in await cluster.op(2, "fetch", room=room)}

        try:
            await cluster.op(2, "sockets_join", rooms=["joined"], room="sel")
            deadline = time.monotonic() + 5
            while await members("joined") != {a.sid(), b.sid()}:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            await cluster.op(0, "sockets_leave", rooms=["joined"], room="sel",
                             **{"except": [a.sid()]})
            while await members("joined") != {a.sid()}:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            await cluster.op(2, "disconnect_sockets", room="sel")
            await asyncio.wait_for(asyncio.gather(a.disconnected.wait(),
                                                  b.disconnected.wait()), 5)
            await asyncio.sleep(QUIET_S)
            assert not c.disconnected.is_set()
        finally:
            await _close(a, b, c)

    run(main())


def test_server_side_emit_with_acks(cluster: Cluster) -> None:
    async def main() -> None:
        assert await cluster.op(1, "server_count") == 3
        raw = {"b64": base64.b64encode(b"\x00sse").decode()}
        got = await cluster.op(0, "sse", event="whoami", args=[1, raw])
        assert "timeout" not in got
        assert sorted(r["slot"] for r in got["results"]) == [1, 2]
        assert all(r["args"] == [1, raw] for r in got["results"])
        none = await cluster.op(0, "sse", event="nobody-listens")
        assert none == {"results": []}

    run(main())


def test_request_timeout_returns_partial_results(cluster: Cluster) -> None:
    async def main() -> None:
        # slot 1 answers after 0.4 s, slot 2 after 0.8 s; we wait 0.6 s.
        got = await cluster.op(0, "sse", event="slow", args=[0.4], timeout=0.6)
        assert got["timeout"] is True
        assert got["results"] == [{"slot": 1}]
        assert got["missing"] == [cluster.workers[2].node]
        await asyncio.sleep(0.5)  # the late answer arrives and is ignored
        status = await cluster.op(0, "status")
        assert status["requests_pending"] == 0
        assert status["requests_timed_out"] >= 1

    run(main())


def test_worker_killed_mid_request(cluster: Cluster) -> None:
    async def main() -> None:
        victim = cluster.workers[2]
        request = asyncio.create_task(cluster.op(0, "sse", event="slow", args=[0.5]))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        victim.kill()
        got = await request
        elapsed = time.monotonic() - started
        # Answered by the survivor once the dead worker was noticed, not at the 3 s timeout.
        assert "timeout" not in got, got
        assert got["results"] == [{"slot": 1}]
        assert elapsed < 2.0
        # The slot comes back as a new generation and the cluster heals.
        cluster.restart(2)
        await cluster.wait_mesh()
        a = await cluster.client(2)
        try:
            await cluster.op(0, "emit", event="back", data="hi")
            await wait_for(lambda: a.got("back") == ["hi"])
            fetched = await cluster.op(1, "fetch", room=a.sid())
            assert [s["id"] for s in fetched] == [a.sid()]
        finally:
            await _close(a)

    run(main())


def test_broker_outage_buffers_in_order_without_duplicates(cluster: Cluster) -> None:
    if cluster.backend == "local":
        pytest.skip("broker outage applies to the redis and amqp backends")
    redis: RabbitMQServer = cluster.redis  # type: ignore[attr-defined]

    async def main() -> None:
        remote = await cluster.client(1)
        local = await cluster.client(0)
        count = 60
        try:
            sending = asyncio.create_task(
                cluster.op(0, "emit_many", event="seq", count=count, pause=0.03))
            await asyncio.sleep(0.4)
            redis.kill()
            deadline = time.monotonic() + 5
            while (await cluster.op(0, "status"))["state"] != "degraded":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            # Local clients keep being served during the outage.
            seen_local = len(local.got("seq"))
            await asyncio.sleep(0.5)
            assert len(local.got("seq")) > seen_local
            redis.start()
            await sending
            try:
                await wait_for(lambda: len(remote.got("seq")) >= count, timeout_s=30)
            except AssertionError:
                statuses = [await cluster.op(w.slot, "status") for w in cluster.workers]
                raise AssertionError(f"got {remote.got('seq')}; statuses {statuses}") from None
            await asyncio.sleep(QUIET_S)
            assert remote.got("seq") == list(range(count))
            assert local.got("seq") == list(range(count))
            # A broker that is still starting may accept and then drop a first
            # connection: the adapter reconnects again, within its backoff.
            deadline = time.monotonic() + 10
            while (status := await cluster.op(0, "status"))["state"] != "connected":
                assert time.monotonic() < deadline, status
                await asyncio.sleep(0.1)
            assert status["dropped"] == 0
            assert status["transport"]["outages"] >= 1
            assert status["transport"]["reconnects"] >= 1
            assert (await cluster.op(1, "status"))["duplicates"] == 0
            await cluster.wait_mesh()
        finally:
            await _close(remote, local)

    run(main())


@pytest.mark.parametrize("backend", ["local", "redis", "amqp"])
def test_through_the_real_cluster(
    backend: str, tmp_path: Any, request: pytest.FixtureRequest
) -> None:
    """``siocluster run``: the worker installs the adapter; a shout reaches every client once."""
    env = {"SIOCLUSTER_ADAPTER_BACKEND": backend}
    if backend == "redis":
        env["SIOCLUSTER_ADAPTER_REDIS_URL"] = request.getfixturevalue("redis_server_factory")().url
    if backend == "amqp":
        env["SIOCLUSTER_ADAPTER_AMQP_URL"] = request.getfixturevalue("rabbitmq_server").url
        env["SIOCLUSTER_ADAPTER_CHANNEL"] = f"sioc-real-{id(request)}"
    with start_cluster("echo_app:app", workers=2, env=env, tmp_path=tmp_path) as cluster:

        async def main() -> None:
            clients = [socketio.AsyncClient(reconnection=False) for _ in range(8)]
            heard: dict[int, list[Any]] = {i: [] for i in range(len(clients))}
            for i, c in enumerate(clients):
                c.on("shout", lambda data, i=i: heard[i].append(data))
            try:
                for c in clients:
                    await c.connect(cluster.url, transports=["websocket"], wait_timeout=10)
                pids = {(await c.call("whoami", timeout=10))["pid"] for c in clients}
                assert len(pids) == 2, "clients should be spread over both workers"
                await clients[0].emit("shout", "hey")
                await wait_for(lambda: all(heard.values()))
                await asyncio.sleep(QUIET_S)
                assert all(h == ["hey"] for h in heard.values())
            finally:
                await asyncio.gather(*(c.disconnect() for c in clients),
                                     return_exceptions=True)

        run(main())
        deadline = time.monotonic() + 5
        while True:
            adapters = cluster.status()["adapter"]["workers"]
            if len(adapters) == 2 and all(a["server_count"] == 2 for a in adapters):
                break
            assert time.monotonic() < deadline, adapters
            time.sleep(0.1)
        assert {(a["backend"], a["state"]) for a in adapters} == {(backend, "connected")}


def test_a_worker_without_the_room_does_not_receive_its_emits(cluster: Cluster) -> None:
    """Dynamic room channels (several hosts): only holders hear an emit to one room."""
    dynamic = "--host-prefix" in cluster.extra

    async def received(slot: int) -> tuple[int, int]:
        status = await cluster.op(slot, "status")
        return status["received"], status["skipped"]

    async def main() -> None:
        holder = await cluster.client(0, auth={"rooms": ["only-on-0"]})
        bystander = await cluster.client(2)
        try:
            if dynamic:  # the holder's subscription is asynchronous
                await asyncio.sleep(0.2)
            before = await received(2)
            for i in range(20):
                await cluster.op(1, "emit", event="r", data=i, to="only-on-0")
            await wait_for(lambda: len(holder.got("r")) == 20)
            await cluster.op(1, "emit", event="all", data="x")  # a marker on the common channel
            await wait_for(lambda: bystander.got("all") == ["x"])
            after = await received(2)
            assert holder.got("r") == list(range(20)) and bystander.got("r") == []
            if dynamic:
                assert after[1] == before[1], "the bystander decoded none of them"
                assert after[0] - before[0] < 20, (before, after)
            else:
                assert after[1] - before[1] >= 20, "every worker hears them, and skips them"
            # the holder leaves: its worker unsubscribes; later emits reach nobody, counted
            # nowhere as lost
            await cluster.op(0, "leave_room", sid=holder.sid(), room="only-on-0")
            await asyncio.sleep(0.2)
            await cluster.op(1, "emit", event="r", data="late", to="only-on-0")
            await asyncio.sleep(QUIET_S)
            assert holder.got("r") == list(range(20))
            status = await cluster.op(0, "status")
            assert status["lost"] == 0 and status["duplicates"] == 0, status
        finally:
            await _close(holder, bystander)

    run(main())
