"""The local backend over real Unix sockets, several transports in one process."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from balancer.sid import mint_sid
from tests.worker.adapter.events import Recorder, frame, until
from worker.adapter.local import LocalTransport
from worker.adapter.transport import AdapterState, Owner


def test_mesh_forms_frames_flow_and_death_is_noticed(tmp_path: Path) -> None:
    async def main() -> None:
        a, b = LocalTransport(str(tmp_path), 0, 1), LocalTransport(str(tmp_path), 1, 1)
        ea, eb = Recorder(), Recorder()
        await a.start(ea)
        await b.start(eb)  # b finds a; a dials back before b's start returns
        assert a.state == b.state == AdapterState.CONNECTED
        assert oct(os.stat(a.path).st_mode & 0o777) == "0o600"
        await until(lambda: "1.1" in ea.up and "0.1" in eb.up)

        for i in range(100):
            a.send(frame("0.1", i), None)
        b.send(frame("1.1", "direct", to="0.1"), "0.1")
        await until(lambda: len(eb.frames) == 100 and ea.frames)
        assert eb.data() == list(range(100))
        assert ea.data() == ["direct"]

        assert a.owner_of(mint_sid(1, 1)) == "1.1"
        assert a.owner_of(mint_sid(1, 2)) is Owner.GONE  # a generation nobody runs
        assert a.owner_of("not-a-worker-sid") is Owner.ANY

        await b.close()
        assert not os.path.exists(b.path)
        await until(lambda: "1.1" in ea.down)
        a.send(frame("0.1", "lost"), "1.1")
        assert a.status().transport_dropped == 1
        await a.close()

    asyncio.run(main())


def test_late_joiner_and_restart_with_new_generation(tmp_path: Path) -> None:
    async def main() -> None:
        nodes = [LocalTransport(str(tmp_path), slot, 1, scan_interval_s=0.05) for slot in range(3)]
        events = [Recorder() for _ in nodes]
        for node, ev in zip(nodes, events, strict=True):
            await node.start(ev)
        await until(lambda: all(n.status().peers_connected == 2 for n in nodes))

        # Slot 2 crashes: its socket file stays behind, refusing connections.
        crashed = nodes[2]
        assert crashed._server is not None
        crashed._server.close()
        for writer in [*crashed._out.values(), *crashed._inbound.values()]:
            writer.transport.abort()
        await until(lambda: all("2.1" in ev.down for ev in events[:2]))

        # Its replacement (generation 2) is reachable from the others at once.
        replacement, ev2 = LocalTransport(str(tmp_path), 2, 2), Recorder()
        await replacement.start(ev2)
        assert not os.path.exists(crashed.path)  # a stale socket of our own slot
        nodes[0].send(frame("0.1", "hello"), None)
        await until(lambda: ev2.data() == ["hello"])
        assert nodes[0].owner_of(mint_sid(2, 2)) == "2.2"
        for node in (nodes[0], nodes[1], replacement):
            await node.close()
        for task in list(crashed._tasks):
            task.cancel()

    asyncio.run(main())
