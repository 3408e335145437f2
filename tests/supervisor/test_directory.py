"""The balancer's view of the master's workers (supervisor/directory.py), with plain handles."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from supervisor.directory import MasterDirectory
from supervisor.handle import WorkerHandle
from supervisor.state import WorkerState as S


def handle(slot: int, generation: int, state: S = S.STARTING, **kw: Any) -> WorkerHandle:
    h = WorkerHandle(slot, generation, f"/run/w{slot}", SimpleNamespace(handoff=None), **kw)  # type: ignore[arg-type]
    if state is not S.STARTING:
        h.state = S.READY
        h.state = state
    return h


def test_views_follow_the_handles_and_are_rebuilt_only_when_invalidated() -> None:
    handles = [handle(0, 1, S.READY, connections=3), handle(1, 2, S.DRAINING)]
    d = MasterDirectory(handles, lambda: None)
    first = d.views()
    assert [(v.slot, v.generation, v.accepting, v.serving, v.load) for v in first] == [
        (0, 1, True, True, 3), (1, 2, False, True, 0)]
    handles.append(handle(0, 3))  # the master's own list: no copy
    assert d.views() is first
    d.invalidate()
    assert [(v.slot, v.generation, v.accepting, v.serving) for v in d.views()][-1] == (
        0, 3, False, False)


def test_a_routed_handshake_counts_as_load_at_once() -> None:
    handles = [handle(0, 1, S.READY, connections=2)]
    d = MasterDirectory(handles, lambda: None)
    assert d.views()[0].load == 2
    d.note_handshake(0, 1)
    d.note_handshake(0, 9)  # a generation that is gone: nothing
    assert d.views()[0].load == 3


def test_paths_channels_and_a_single_host() -> None:
    d = MasterDirectory([handle(2, 0x1f)], lambda: None)
    d.runtime_dir = "/tmp/rt"
    assert d.socket_path(2, 0x1f) == "/tmp/rt/worker-2-1f.sock"
    assert d.handoff_channel(2, 0x1f) is None and d.handoff_channel(3, 1) is None
    assert d.engineio_path == "/socket.io/"
    assert (d.host_id, d.live_hosts(), d.peer_address("x")) == ("", frozenset(), None)
    d.note_peer("x", "down")  # alone: nothing to note
