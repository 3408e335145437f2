"""Emits from outside the cluster over RabbitMQ, end to end (a real rabbitmq-server).

* python-socketio's own ``AsyncAioPikaManager(write_only=True)``, in a separate
  process, emits to all, a room, with ``skip_sid``, to a sid and a namespace:
  each target client on both workers gets it once.
* Published while the cluster is stopped: delivered once it is back, unless
  older than the queue's TTL (the bound).
* Pickled messages are refused and counted; nothing runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from supervisor.emitter import Emitter
from tests.integration.adapter_cluster import Client, Cluster, wait_for
from tests.rabbitmq_server import RabbitMQServer
from worker.adapter.amqp_emitter import emit_queue_arguments

pytestmark = pytest.mark.timeout(120)

EMITTER = Path(__file__).with_name("emitter_proc.py")
QUIET_S = 0.5


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def pika_emit(url: str, channel: str, *items: dict[str, Any], kind: str = "amqp") -> None:
    """python-socketio's AsyncAioPikaManager(write_only=True), or with ``kind="kombu"``
    its KombuManager(write_only=True), in another process."""
    out = subprocess.run(
        [sys.executable, str(EMITTER), kind, url, channel, json.dumps(list(items))],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert out.returncode == 0 and f"SENT {len(items)}" in out.stdout, out.stderr


def make_cluster(broker: RabbitMQServer, name: str, *, ttl_s: float = 300.0,
                 delay_s: float = 0.0) -> Cluster:
    c = Cluster("amqp", 2, amqp_url=broker.url, extra=(
        "--channel", f"sioc-{name}", "--emitter-channel", f"ext-{name}",
        "--emitter-queue-ttl-s", str(ttl_s), "--emitter-consume-delay-s", str(delay_s)))
    c.start()
    return c


@pytest.fixture
def cluster(rabbitmq_server: RabbitMQServer, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    c = make_cluster(rabbitmq_server, request.node.name[:40].replace("[", "-").strip("]"))
    try:
        run(c.wait_mesh())
        yield c
    finally:
        c.stop()


async def _close(*clients: Client) -> None:
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


def _ext(cluster: Cluster) -> str:
    return cluster.extra[cluster.extra.index("--emitter-channel") + 1]


@pytest.mark.parametrize("kind", ["amqp", "kombu"])
def test_python_socketio_amqp_managers_emits_reach_each_client_once(
    cluster: Cluster, rabbitmq_server: RabbitMQServer, kind: str
) -> None:
    """AsyncAioPikaManager and KombuManager (Celery users' way), write-only."""
    async def main() -> None:
        a = await cluster.client(0, auth={"rooms": ["red"]})
        b = await cluster.client(1, auth={"rooms": ["red"]})
        c = await cluster.client(1)
        d = await cluster.client(0)
        chat = await cluster.client(1, namespaces=["/chat"])
        everyone = (a, b, c, d)
        try:
            await asyncio.to_thread(
                pika_emit, rabbitmq_server.url, _ext(cluster),
                {"event": "fanout", "data": 42},
                {"event": "red", "data": {"n": 1}, "room": "red"},
                {"event": "red_but_b", "data": "x", "room": "red", "skip_sid": b.sid()},
                {"event": "to_c", "data": [1, "two"], "multi": True, "to": c.sid()},
                {"event": "chat", "data": "hi", "namespace": "/chat"},
                kind=kind,
            )
            await wait_for(lambda: all(x.got("fanout") for x in everyone), timeout_s=10)
            await wait_for(lambda: chat.got("chat", "/chat") and c.got("to_c")
                           and a.got("red_but_b"), timeout_s=10)
            await asyncio.sleep(QUIET_S)
            for x in everyone:
                assert x.got("fanout") == [42]
            assert a.got("red") == b.got("red") == [{"n": 1}]
            assert c.got("red") == d.got("red") == []
            assert a.got("red_but_b") == ["x"]
            assert b.got("red_but_b") == c.got("red_but_b") == d.got("red_but_b") == []
            assert c.got("to_c") == [[1, "two"]]
            assert a.got("to_c") == b.got("to_c") == d.got("to_c") == []
            assert chat.got("chat", "/chat") == ["hi"]
            statuses = [await cluster.op(w.slot, "status") for w in cluster.workers]
            # One worker consumes the queue at a time; each emit counted once.
            assert sum(s["emits"].get("amqp", 0) for s in statuses) == 5
        finally:
            await _close(*everyone, chat)

    run(main())


def test_published_while_the_cluster_is_down_is_delivered_within_the_bound(
    rabbitmq_server: RabbitMQServer,
) -> None:
    # The consume delay must outlast the clients' connecting below, and the
    # TTL the cluster's start plus that delay (else "kept" expires too):
    # generous, as a loaded machine can take seconds to start two workers.
    ttl_s, delay_s = 15.0, 5.0
    name = f"down-{os.getpid()}"
    first = make_cluster(rabbitmq_server, name, ttl_s=ttl_s)  # declares the topology
    first.stop()
    ext = f"ext-{name}"
    emitter = Emitter("amqp", url=rabbitmq_server.url, channel=ext,
                      amqp_queue=f"sioc-{name}.emit",
                      amqp_queue_arguments=emit_queue_arguments(ttl_s, 100_000))
    pika_emit(rabbitmq_server.url, ext, {"event": "too_old", "data": 0})
    time.sleep(ttl_s + 1)
    pika_emit(rabbitmq_server.url, ext, {"event": "kept", "data": 1},
              {"event": "kept", "data": 2, "room": "red"})
    emitter.emit("kept", 3)  # siocluster's Emitter: durable exchange, persistent, confirmed
    emitter.emit("kept", (4, "four"), to="red")

    started = time.monotonic()
    second = make_cluster(rabbitmq_server, name, ttl_s=ttl_s, delay_s=delay_s)
    try:
        async def main() -> None:
            a = await second.client(0, auth={"rooms": ["red"]})
            b = await second.client(1, auth={"rooms": ["red"]})
            c = await second.client(1)
            connected_after = time.monotonic() - started
            assert connected_after < delay_s, f"clients took {connected_after:.1f}s"
            try:
                try:
                    await wait_for(lambda: len(a.got("kept")) == 4 and len(c.got("kept")) == 2,
                                   timeout_s=delay_s + 10)
                except AssertionError:
                    statuses = [await second.op(w.slot, "status") for w in second.workers]
                    raise AssertionError(
                        f"a={a.got('kept')} b={b.got('kept')} c={c.got('kept')}; "
                        f"{[(s['emits'], s['external']) for s in statuses]}") from None
                await asyncio.sleep(QUIET_S)
                assert a.got("kept") == b.got("kept") == [1, 2, 3, [4, "four"]]
                assert c.got("kept") == [1, 3]
                assert a.got("too_old") == b.got("too_old") == c.got("too_old") == []
                # What the TTL dropped is counted, once, not lost silently.
                assert await expired_count(second, at_least=1) == 1
            finally:
                await _close(a, b, c)

        run(main())
    finally:
        second.stop()


async def expired_count(cluster: Cluster, *, at_least: int, timeout_s: float = 10.0) -> int:
    """The emits the queue dropped for age, as the workers counted them (waiting for
    ``at_least``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        statuses = [await cluster.op(w.slot, "status") for w in cluster.workers]
        count = sum(s["external_refused"].get("amqp/expired", 0) for s in statuses)
        if count >= at_least or time.monotonic() > deadline:
            return count
        await asyncio.sleep(0.2)


def test_an_emit_queue_from_an_earlier_release_is_used_as_it_is(
    rabbitmq_server: RabbitMQServer, capfd: pytest.CaptureFixture[str],
) -> None:
    """Declared without dead-lettering, with the same settings: the cluster and the
    emitter use it (its expired emits are not counted; the worker says so)."""
    name = f"legacy-{os.getpid()}"
    queue = f"sioc-{name}.emit"
    arguments = emit_queue_arguments(300.0, 100_000)  # the cluster's defaults

    async def declare() -> None:
        connection = await aio_pika.connect(rabbitmq_server.url)
        async with connection:
            channel = await connection.channel()
            await channel.declare_queue(queue, durable=True, arguments=arguments)

    run(declare())
    c = make_cluster(rabbitmq_server, name)
    try:
        async def main() -> None:
            a = await c.client(0)
            try:
                await asyncio.to_thread(Emitter("amqp", url=rabbitmq_server.url,
                                                channel=f"ext-{name}", amqp_queue=queue,
                                                amqp_queue_arguments=arguments).emit,
                                        "hello", 1)
                await asyncio.to_thread(pika_emit, rabbitmq_server.url, f"ext-{name}",
                                        {"event": "hello", "data": 2})
                await wait_for(lambda: a.got("hello") == [1, 2], timeout_s=10)
                status = await c.op(0, "status")
                assert status["external"]["amqp"]["state"] == "connected"
            finally:
                await _close(a)

        run(main())
        assert "declared without dead-lettering" in capfd.readouterr().err
    finally:
        c.stop()


class _Boom:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (os.system, (f"touch {self.path}",))


def test_pickled_messages_are_refused_and_counted(
    cluster: Cluster, rabbitmq_server: RabbitMQServer, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"

    async def main() -> None:
        a = await cluster.client(0)
        try:
            message = {"method": "emit", "event": "evil", "data": _Boom(str(marker)),
                       "namespace": "/"}
            connection = await aio_pika.connect(rabbitmq_server.url)
            async with connection:
                channel = await connection.channel()
                exchange = await channel.declare_exchange(_ext(cluster),
                                                          aio_pika.ExchangeType.FANOUT)
                await exchange.publish(aio_pika.Message(pickle.dumps(message)), routing_key="*")
            await asyncio.to_thread(pika_emit, rabbitmq_server.url, _ext(cluster),
                                    {"event": "after", "data": 1})
            await wait_for(lambda: a.got("after") == [1], timeout_s=10)
            assert a.got("evil") == []
            assert not marker.exists()
            statuses = [await cluster.op(w.slot, "status") for w in cluster.workers]
            assert sum(s["external_refused"].get("amqp/pickle", 0) for s in statuses) == 1
        finally:
            await _close(a)

    run(main())


def test_an_emit_queue_with_other_arguments_is_reported_not_hidden(
    rabbitmq_server: RabbitMQServer,
) -> None:
    """The queue exists with another TTL (the config changed): degraded, with the reason."""
    name = f"clash-{os.getpid()}"

    async def declare() -> None:
        connection = await aio_pika.connect(rabbitmq_server.url)
        async with connection:
            channel = await connection.channel()
            await channel.declare_queue(f"sioc-{name}.emit", durable=True,
                                        arguments=emit_queue_arguments(1.0, 10))

    run(declare())
    c = make_cluster(rabbitmq_server, name)
    try:
        async def main() -> None:
            status = await c.op(0, "status")
            assert status["state"] == "degraded"
            amqp = status["external"]["amqp"]
            assert amqp["state"] == "degraded"
            assert "PRECONDITION_FAILED" in amqp["error"]
            assert "x-message-ttl" in amqp["error"]

        run(main())
    finally:
        c.stop()


def test_a_worker_that_stops_cleanly_deletes_its_queue(
    cluster: Cluster, rabbitmq_server: RabbitMQServer
) -> None:
    channel = cluster.extra[cluster.extra.index("--channel") + 1]
    names = [f"{channel}.node.{w.node}" for w in cluster.workers]

    async def exists(name: str) -> bool:
        connection = await aio_pika.connect(rabbitmq_server.url)
        async with connection:
            ch = await connection.channel()
            try:
                await ch.declare_queue(name, passive=True)
            except aio_pika.exceptions.ChannelNotFoundEntity:
                return False
            return True

    assert run(exists(names[1]))
    cluster.workers[1].stop()  # SIGTERM: a clean stop
    assert not run(exists(names[1]))
    assert run(exists(names[0]))


def test_emitter_messages_survive_a_broker_crash_while_the_cluster_is_down(
    rabbitmq_server: RabbitMQServer,
) -> None:
    """siocluster's Emitter: durable exchange and queue, persistent messages."""
    name = f"crash-{os.getpid()}"
    first = make_cluster(rabbitmq_server, name)
    first.stop()
    emitter = Emitter("amqp", url=rabbitmq_server.url, channel=f"ext-{name}",
                      amqp_queue=f"sioc-{name}.emit",
                      amqp_queue_arguments=emit_queue_arguments(300.0, 100_000))
    emitter.emit("kept", "across a broker crash")
    rabbitmq_server.kill()  # SIGKILL
    rabbitmq_server.start()
    started = time.monotonic()
    second = make_cluster(rabbitmq_server, name, delay_s=5.0)
    try:
        async def main() -> None:
            a = await second.client(0)
            b = await second.client(1)
            assert time.monotonic() - started < 5.0
            try:
                await wait_for(lambda: a.got("kept") and b.got("kept"), timeout_s=15)
                await asyncio.sleep(QUIET_S)
                assert a.got("kept") == b.got("kept") == ["across a broker crash"]
            finally:
                await _close(a, b)

        run(main())
    finally:
        second.stop()
