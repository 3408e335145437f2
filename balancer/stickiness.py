"""When a kept-alive polling connection moves to the worker that owns its sessions.  Pure.

The master relays every polling request it routes: about 45 µs of its CPU
each, two system calls each way.  A connection that carries one worker's
sessions (a browser tab, a python-socketio client: each has its own
connections) needs none of that, so the master passes it to that worker
(``SCM_RIGHTS``, as it does WebSockets), whose gate (:mod:`worker.gate`)
serves the requests of its own sessions straight from the socket, under the
same limits and timers as the master's front.

A fresh connection moves with its first handshake, once the master has
admitted it and picked the worker (:class:`~balancer.front.FrontProtocol`
decides that one).  Otherwise a connection moves after a run of GETs and
POSTs with one worker's sids, nothing else in between (:func:`hand_off_now`).

A request on it that the worker does not own (another worker's sid, a
handshake, which the master admits, the app's own routes, anything but a
GET or POST with the worker's sid, or an upgrade) sends the connection back
to the master with that request (:func:`serves_here`).  A connection shared
by many sessions (nginx's, a pooled client's) would bounce, so every return
makes the next move need a run 16 times as long: 3 on a connection never
given back, then 48, then 768, then never (and only a connection never given
back moves with a handshake).

``tests/balancer/test_stickiness.py`` drives both decisions directly.
"""

from __future__ import annotations

from .sid import SidOwner, parse_sid

__all__ = ["MAX_RETURNS", "hand_off_now", "query_sid", "serves_here", "streak_after"]

# Requests in a row for one worker before the first handoff; each return
# multiplies it by _GROWTH, and past MAX_RETURNS the master keeps the connection.
_FIRST_STREAK = 3
_GROWTH = 16
MAX_RETURNS = 3


def streak_after(previous: tuple[int, int] | None, owner: tuple[int, int], streak: int) -> int:
    """The run of requests in a row for ``owner`` once this one is counted."""
    return streak + 1 if previous == owner else 1


def hand_off_now(streak: int, returns: int) -> bool:
    """Whether a connection whose last ``streak`` requests went to one worker, and
    that workers gave back ``returns`` times, moves to that worker now."""
    if returns >= MAX_RETURNS:
        return False
    needed: int = _FIRST_STREAK * _GROWTH ** returns
    return streak >= needed


def query_sid(query: bytes) -> bytes | None:
    """The first ``sid`` parameter of a query string, as Engine.IO reads it
    (:func:`balancer.routing.extract_sid`, on the raw bytes)."""
    if query.startswith(b"sid="):
        start = 4
    else:
        start = query.find(b"&sid=")
        if start < 0:
            return None
        start += 5
    end = query.find(b"&", start)
    return query[start:] if end < 0 else query[start:end]


def serves_here(path: bytes, method: bytes, version: str, query: bytes, *,
                engineio_path: bytes, me: SidOwner, known: bytes = b"") -> bytes | None:
    """The request's sid when a worker's gate serves it itself: an HTTP/1.1 GET or
    POST on the Engine.IO path with a sid of this worker's (``me``); else None.
    ``known``: a sid this returned before, taken as ours without parsing it again."""
    if path != engineio_path or method not in (b"GET", b"POST") or version != "1.1":
        return None
    sid = query_sid(query)
    if not sid:
        return None
    if sid == known or parse_sid(sid.decode("latin-1")) == me:
        return sid
    return None
