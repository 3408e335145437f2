"""siocluster's Emitter, from outside a real cluster, configured from its config file.

``local`` goes through ``POST /emit`` (with the admin token), ``redis``
through python-socketio's write-only format on the emitter channel; the
amqp way is in test_amqp_emit.py.  Sync (a Celery-style task in a thread with
no event loop) and async.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from supervisor.emitter import AsyncEmitter, Emitter, EmitterError
from tests.cluster import Cluster, start_cluster
from tests.integration.adapter_cluster import wait_for
from tests.integration.test_http_emit import Recorder
from tests.redis_server import redis_server_factory

__all__ = ["redis_server_factory"]

pytestmark = pytest.mark.timeout(120)
TOKEN = "emitter-token-123"


@pytest.fixture(scope="module", params=["local", "redis"])
def setup(request: pytest.FixtureRequest,
          tmp_path_factory: Any) -> Iterator[tuple[Cluster, Path]]:
    tmp = tmp_path_factory.mktemp(f"emitter-{request.param}")
    lines = [f'[admin]\ntoken = "{TOKEN}"\n', f'[adapter]\nbackend = "{request.param}"\n']
    if request.param == "redis":
        url = request.getfixturevalue("redis_server_factory")().url
        lines.append(f'redis_url = "{url}"\nemitter_channel = "emitter-test"\n')
    config = "".join(lines)
    env = {"SIOCLUSTER_ADAPTER_BACKEND": request.param}
    with start_cluster("emit_app:app", workers=2, tmp_path=tmp, config=config, env=env,
                       token=TOKEN) as cluster:
        path = tmp / "emitter.toml"
        # The same file, plus the admin port the test harness chose.
        path.write_text(config.replace("[admin]\n", f"[admin]\nport = {cluster.admin_port}\n"))
        yield cluster, path


def celery_style_task(config_path: Path, user_room: str, report: dict[str, Any]) -> None:
    """What a Celery task body looks like: sync, no event loop, its own emitter."""
    emitter = Emitter.from_config(config_path, env={})
    try:
        emitter.emit("report_ready", report, to=user_room)
    finally:
        emitter.close()


def test_sync_and_async_emitters(setup: tuple[Cluster, Path]) -> None:
    cluster, path = setup
    backend = cluster.status()["adapter"]["backend"]
    assert Emitter.from_config(path, env={}).via == ("http" if backend == "local" else "redis")

    async def main() -> None:
        clients = [Recorder() for _ in range(4)]
        pids = set()
        for i, r in enumerate(clients):
            pids.add(await r.connect(cluster.url, ["user:7"] if i % 2 else [], ["/"]))
        try:
            assert len(pids) == 2
            worker = threading.Thread(target=celery_style_task,
                                      args=(path, "user:7", {"id": 42}))
            worker.start()
            await asyncio.to_thread(worker.join)
            emitter = AsyncEmitter.from_config(path, env={})
            try:
                await emitter.emit("hello", ("a", 1), skip_sid=clients[0].sid())
            finally:
                await emitter.close()
            sync = Emitter.from_config(path, env={})
            sync.emit("all", None)
            if backend == "redis":
                sync.emit("blob", {"b": b"\x00\x01"})
            sync.close()
            await wait_for(lambda: all(x.got("all") for x in clients))
            await wait_for(lambda: clients[1].got("report_ready") and clients[3].got("hello"))
            if backend == "redis":
                await wait_for(lambda: all(x.got("blob") for x in clients))
                assert all(x.got("blob") == [{"b": b"\x00\x01"}] for x in clients)
            await asyncio.sleep(0.4)
            assert [len(x.got("report_ready")) for x in clients] == [0, 1, 0, 1]
            assert clients[1].got("report_ready") == [{"id": 42}]
            assert [x.got("hello") for x in clients] == [[], [["a", 1]], [["a", 1]], [["a", 1]]]
            assert all(x.got("all") == [[]] for x in clients)  # None: no argument
        finally:
            await asyncio.gather(*(x.sio.disconnect() for x in clients), return_exceptions=True)

    asyncio.run(main())


def test_http_emitter_errors_are_clear(setup: tuple[Cluster, Path]) -> None:
    _cluster, path = setup
    emitter = Emitter.from_config(path, via="http", env={})
    with pytest.raises(ValueError, match="callbacks"):
        emitter.emit("x", 1, callback=print)
    with pytest.raises(TypeError, match="binary"):
        emitter.emit("x", b"bytes")
    with pytest.raises(EmitterError, match=r"400 .*reserved"):
        emitter.emit("disconnect", 1)
    emitter.token = "wrong"
    with pytest.raises(EmitterError, match="401"):
        emitter.emit("x", 1)
