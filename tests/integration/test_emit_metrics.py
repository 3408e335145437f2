"""/metrics of a real ``siocluster run`` cluster counts external emits by source.

python-socketio's own write-only managers (in a separate process) publish to
a cluster on ``redis`` and on ``amqp``; a pickled message is refused.  The
counts travel from the workers in their heartbeats.
"""

from __future__ import annotations

import asyncio
import os
import pickle
from typing import Any

import aio_pika
import pytest
import redis

from tests.cluster import start_cluster
from tests.integration.test_amqp_emit import pika_emit
from tests.integration.test_external_emit import emit_from_another_process
from tests.redis_server import redis_server_factory
from tests.waiting import eventually

__all__ = ["redis_server_factory"]

pytestmark = pytest.mark.timeout(120)


def _metric(text: str, line: str) -> bool:
    return any(m.startswith(line) for m in text.splitlines())


@pytest.mark.parametrize("backend", ["redis", "amqp"])
def test_external_emits_and_refusals_are_in_metrics(
    backend: str, tmp_path: Any, request: pytest.FixtureRequest
) -> None:
    ext = f"metrics-{backend}-{os.getpid()}"
    env = {"SIOCLUSTER_ADAPTER_BACKEND": backend, "SIOCLUSTER_ADAPTER_EMITTER_CHANNEL": ext,
           "SIOCLUSTER_ADAPTER_CHANNEL": f"sioc-{ext}",
           "SIOCLUSTER_ADAPTER_EMITTER_CONSUME_DELAY_S": "0"}
    if backend == "redis":
        url = request.getfixturevalue("redis_server_factory")().url
        env["SIOCLUSTER_ADAPTER_REDIS_URL"] = url
    else:
        url = request.getfixturevalue("rabbitmq_server").url
        env["SIOCLUSTER_ADAPTER_AMQP_URL"] = url
    with start_cluster("emit_app:app", workers=2, env=env, tmp_path=tmp_path) as cluster:
        source = "redis-emitter" if backend == "redis" else "amqp"
        if backend == "redis":
            emit_from_another_process("redis", url, ext, {"event": "a", "data": 1},
                                      {"event": "b", "data": 2})
            client = redis.Redis.from_url(url)
            try:
                client.publish(ext, pickle.dumps({"method": "emit"}))
            finally:
                client.close()
        else:
            # The queue exists once a worker consumed: wait for it.
            eventually(lambda: all(
                w.get("external", {}).get("amqp", {}).get("state") == "connected"
                for w in cluster.status()["adapter"]["workers"]))
            pika_emit(url, ext, {"event": "a", "data": 1}, {"event": "b", "data": 2})
            async def publish_pickle() -> None:
                connection = await aio_pika.connect(url)
                async with connection:
                    channel = await connection.channel()
                    exchange = await channel.declare_exchange(ext, aio_pika.ExchangeType.FANOUT)
                    await exchange.publish(aio_pika.Message(pickle.dumps({"m": 1})),
                                           routing_key="*")

            asyncio.run(publish_pickle())

        def counted() -> bool:
            code, text = cluster.admin("/metrics")
            refused = [m for m in text.splitlines()
                       if m.startswith("siocluster_external_refused_total{")
                       and 'reason="pickle"' in m and f'source="{source}"' in m]
            total = sum(float(m.rsplit(" ", 1)[1]) for m in refused)
            # redis: every worker hears (and refuses) each message; amqp: one worker.
            expected = 2.0 if backend == "redis" else 1.0
            return code == 200 and _metric(
                text, f'siocluster_emits_total{{source="{source}"}} 2.0') and total == expected

        eventually(counted, timeout_s=10)


