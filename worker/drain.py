"""Closing a draining worker's sessions: spread out, and never mid-upgrade.

A draining worker (roll, recycle, scale-down) closes its Engine.IO sessions so
their clients reconnect to another worker (with connection-state recovery on,
the sessions are made recoverable first).  Closing them all at once sends the
successor a reconnect storm; closing a session that is between its polling
handshake and its WebSocket upgrade makes the upgrade fail with a 400 (issue
13 measured 6 to 8 of 600 in a roll).  So:

* session *i* of *n* is due at ``start + i * spread_s / n``;
* a due session is closed unless it is upgrading, or is a polling session
  younger than ``upgrade_grace_s`` that has not upgraded yet (its upgrade is
  likely on its way): those wait until they are through, or until
  ``spread_s + upgrade_grace_s`` has passed.

:func:`may_close` and :func:`due_times` are the decision; :func:`close_spread`
the loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["SessionFacts", "close_session", "close_spread", "due_times", "may_close"]

UPGRADE_GRACE_S = 3.0
TICK_S = 0.05


@dataclasses.dataclass(frozen=True, slots=True)
class SessionFacts:
    upgrading: bool
    upgraded: bool
    age_s: float


def due_times(count: int, start: float, spread_s: float) -> list[float]:
    if count <= 0:
        return []
    step = spread_s / count if spread_s > 0 else 0.0
    return [start + i * step for i in range(count)]


def may_close(facts: SessionFacts, now: float, hard_deadline: float,
              upgrade_grace_s: float = UPGRADE_GRACE_S) -> bool:
    if now >= hard_deadline:
        return True
    if facts.upgrading:
        return False
    return facts.upgraded or facts.age_s >= upgrade_grace_s


async def close_session(eio: Any, sid: str, *, reason: str | None = None,
                        abort: bool = False) -> None:
    """Close one Engine.IO session so that its client notices *now*.

    python-engineio's ``disconnect(sid)`` queues a CLOSE packet and leaves a
    WebSocket open: socket.io-client ignores a CLOSE packet on a WebSocket (its
    polling transport honours it), so the client would reconnect only when the
    worker exits or a ping times out, seconds later.  Here the session is closed
    (the app's disconnect handlers run, CLOSE is queued unless ``abort``), then
    the queue's ``None`` sentinel, python-engineio's own "writer, exit", makes
    its WebSocket writer send what is queued and close the connection.
    """
    sock = eio.sockets.get(sid)
    if sock is None:
        return
    await sock.close(wait=False, abort=abort, reason=reason or eio.reason.SERVER_DISCONNECT)
    if sock.upgraded:
        sock.queue.put_nowait(None)
    eio.sockets.pop(sid, None)


def _facts(sock: Any, now: float) -> SessionFacts:
    created = getattr(sock.queue, "created", None)
    age = now - created if isinstance(created, float) else UPGRADE_GRACE_S
    return SessionFacts(bool(sock.upgrading), bool(sock.upgraded), age)


async def close_spread(
    sockets: dict[str, Any], close: Callable[[str], Coroutine[Any, Any, None]], spread_s: float,
    upgrade_grace_s: float = UPGRADE_GRACE_S,
) -> int:
    """Close every session in ``sockets`` (python-engineio's table); how many were closed."""
    start = time.monotonic()
    order = list(sockets)
    due = dict(zip(order, due_times(len(order), start, spread_s), strict=True))
    hard_deadline = start + spread_s + upgrade_grace_s
    closed = 0
    tasks: set[asyncio.Task[None]] = set()
    while due:
        now = time.monotonic()
        for sid, at in list(due.items()):
            if at > now:
                continue
            sock = sockets.get(sid)
            if sock is None or sock.closed:
                del due[sid]
                continue
            if may_close(_facts(sock, now), now, hard_deadline, upgrade_grace_s):
                del due[sid]
                closed += 1
                task = asyncio.create_task(close(sid))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        if due:
            await asyncio.sleep(TICK_S)
    if tasks:
        await asyncio.wait(tasks)
    return closed
