"""The workloads, in the order they run; each takes the :class:`~bench.lab.Lab`.

Every workload starts its own fresh targets, runs identical client code
against each, and returns a :class:`~bench.model.Section`.
"""

from __future__ import annotations

from collections.abc import Callable

from ..lab import Lab
from ..model import Section
from .echo import polling_echo, polling_echo_mixed, polling_echo_own, ws_echo
from .fanout import fanout
from .forwarding import forwarding
from .idle import idle_memory
from .recovery import recovery_fanout, recovery_kill, recovery_memory
from .storm import connect_storm

__all__ = ["WORKLOADS", "Workload"]

Workload = Callable[[Lab], Section]



def _asgi(workload: Workload, name: str) -> Workload:
    """The same workload on the ASGI app: the cluster against N plain uvicorn processes."""

    def run(lab: Lab) -> Section:
        section = workload(lab.serving("bench_asgi"))
        section.workload = name
        section.notes.append("app: socketio.ASGIApp; direct: N `uvicorn bench_asgi:app` "
                             "(httptools, uvloop)")
        return section

    return run


WORKLOADS: dict[str, Workload] = {
    "ws-echo": ws_echo,
    "fan-out": fanout,
    "connect-storm": connect_storm,
    "polling-echo": polling_echo,
    "polling-echo-own": polling_echo_own,
    "polling-echo-mixed": polling_echo_mixed,
    "idle-memory": idle_memory,
    "ws-echo-asgi": _asgi(ws_echo, "ws-echo-asgi"),
    "polling-echo-asgi": _asgi(polling_echo, "polling-echo-asgi"),
    "polling-echo-own-asgi": _asgi(polling_echo_own, "polling-echo-own-asgi"),
    "connect-storm-asgi": _asgi(connect_storm, "connect-storm-asgi"),
    "forwarding": forwarding,
    "recovery-fan-out": recovery_fanout,
    "recovery-memory": recovery_memory,
    "recovery-kill": recovery_kill,
}
