"""The routing decision, as a pure function.

Every HTTP request (each one, not each TCP connection: a keep-alive
connection may carry requests of sessions owned by different workers) is
routed on its own:

* a request with ``sid`` in its query goes to the worker encoded in the sid,
  if that worker is still the same generation and has not stopped; otherwise
  it gets Engine.IO's own 400 "Session ID unknown", which makes clients
  re-handshake at once;
* a request without ``sid`` (a new Engine.IO session, or one of the app's own
  routes) goes to the least-loaded ready worker.  Load counts the handshakes
  already routed to a worker that it has not yet reported, so a burst is
  spread instead of piling onto whichever worker looked idle at the last
  heartbeat;
* when no worker is ready, 503;
* with several hosts (``[cluster] advertise``), a sid that names another host
  goes to that host's balancer (:class:`ToHost`) while the host is live, and
  gets the 400 once it has left; a request that another host already
  forwarded is never forwarded again.

Nothing here does I/O; ``tests/balancer/test_routing.py`` drives it directly.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass

from .sid import parse_sid

__all__ = [
    "NO_WORKER",
    "SESSION_UNKNOWN",
    "Forward",
    "Reject",
    "ToHost",
    "WorkerView",
    "extract_sid",
    "route",
    "route_host",
]


@dataclass(frozen=True, slots=True)
class WorkerView:
    """What routing needs to know of one slot."""

    slot: int
    generation: int
    accepting: bool  # ready: may take new sessions
    serving: bool  # ready or draining: still owns its sessions
    load: int


@dataclass(frozen=True, slots=True)
class Forward:
    slot: int
    generation: int
    new_session: bool


@dataclass(frozen=True, slots=True)
class ToHost:
    """The sid belongs to another host of the cluster: forward it there."""

    host: str


@dataclass(frozen=True, slots=True)
class Reject:
    status: int
    body: bytes
    content_type: str = "application/json"


SESSION_UNKNOWN = Reject(400, b'{"code":1,"message":"Session ID unknown"}')
NO_WORKER = Reject(503, b'{"code":503,"message":"no worker is ready"}')


def extract_sid(query_string: str) -> str | None:
    """The first ``sid`` query parameter, as Engine.IO reads it."""
    if "sid=" not in query_string:
        return None
    for pair in query_string.split("&"):
        if pair.startswith("sid="):
            return pair[4:]
    return None


def route_host(sid: str | None, *, host: str, live_hosts: Container[str],
               forwarded: bool) -> ToHost | Reject | None:
    """Which host serves ``sid``: None for this one (then :func:`route` picks the worker)."""
    owner = parse_sid(sid) if sid is not None else None
    if owner is None or not owner.host or owner.host == host:
        return None
    if forwarded or owner.host not in live_hosts:
        return SESSION_UNKNOWN
    return ToHost(owner.host)


def route(sid: str | None, workers: Sequence[WorkerView], host: str = "") -> Forward | Reject:
    if sid is not None:
        owner = parse_sid(sid)
        if owner is None or (owner.host and owner.host != host):
            return SESSION_UNKNOWN
        # During a rolling restart one slot has two generations: match both fields.
        for w in workers:
            if w.slot == owner.slot and w.generation == owner.generation and w.serving:
                return Forward(w.slot, w.generation, new_session=False)
        return SESSION_UNKNOWN

    best: WorkerView | None = None
    for w in workers:
        if w.accepting and (best is None or w.load < best.load):
            best = w
    if best is None:
        return NO_WORKER
    return Forward(best.slot, best.generation, new_session=True)
