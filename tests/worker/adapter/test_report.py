"""The adapter's heartbeat figures: the parts' counters and the transport's, summed.  No sockets."""

from __future__ import annotations

from tests.worker.adapter.outbox import Outbox
from worker.adapter.manager import ClusterManager
from worker.control import ExternalStatus, TransportStatus


class Source:
    def __init__(self, name: str, state: str) -> None:
        self.name = name
        self.state = state

    async def start(self, manager: ClusterManager) -> None:
        return None

    def status(self) -> ExternalStatus:
        return ExternalStatus(channel="socketio", state=self.state, received=1, errors=0,
                              reconnects=0)

    async def close(self) -> None:
        return None


def test_figures_add_the_transports_counts_to_the_managers() -> None:
    out = Outbox()
    out.figures = TransportStatus(transport_sent=9, transport_dropped=1, undeliverable_remote=3,
                                  transport_errors=5, buffered_bytes=10, overflowed=2, expired=4)
    manager = ClusterManager(out)
    manager.wire.sent, manager.undeliverable = 3, 1
    manager.link.undeliverable, manager.link.skipped, manager.link.errors = 2, 4, 1
    manager.calls.malformed, manager.calls.handler_errors, manager.calls.timeouts = 2, 1, 1
    manager.intake.emits["internal"] += 2
    manager.intake.refused["redis-emitter/pickle"] += 1
    status = manager.status()
    assert (status.backend, status.state) == ("outbox", "connected")
    figures = status.figures
    assert figures is not None
    assert (figures.node, figures.peers, figures.server_count) == ("0.1", [], 1)
    assert figures.dropped == 1 + 2 + 4  # dropped, overflowed, expired
    assert figures.undeliverable == 1 + 2 + 3  # gone owners, directed misses, remote misses
    assert figures.errors == 1 + 2 + 5  # bad frames, malformed replies, transport errors
    assert (figures.sent, figures.skipped, figures.handler_errors) == (3, 4, 1)
    assert (figures.requests_timed_out, figures.buffered_bytes) == (1, 10)
    assert figures.transport is out.figures
    assert figures.emits == {"internal": 2}
    assert figures.external_refused == {"redis-emitter/pickle": 1}


def test_a_way_in_from_outside_that_is_down_degrades_the_state() -> None:
    manager = ClusterManager(Outbox())
    manager.intake.sources.append(Source("redis-emitter", "connected"))
    assert manager.status().state == "connected"
    manager.intake.sources.append(Source("amqp", "degraded"))
    status = manager.status()
    assert status.state == "degraded"
    assert status.figures is not None and list(status.figures.external) == ["redis-emitter", "amqp"]
