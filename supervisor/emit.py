"""``POST /emit``: emits from any language, through the admin listener.

Theory of operation
-------------------

The body is one JSON object (:class:`EmitBody`): ``event``, then ``data``
(one argument; ``null`` or absent: none, like ``sio.emit(event)``) or
``args`` (a list: several), ``namespace``, ``room`` or ``rooms``,
and ``except`` (rooms or sids left out).  :func:`parse_body` checks it and
says what is wrong; the admin answers 400 with that reason.

Where it goes (:func:`plan_emit`, pure), so that each client gets it once:

* a cross-worker backend (``local``, ``redis``, ``amqp``): to *one* ready
  worker, which emits it through the adapter exactly like the app's own
  ``sio.emit`` (so it also reaches the workers of other hosts);
* ``none`` (no adapter): to every worker still serving clients, each
  delivering to its own.

The master sends :class:`~worker.control.Emit` on each chosen worker's control
channel and answers the HTTP request when every one of them has replied
:class:`~worker.control.EmitDone`, that is, when the message is handed to the
adapter (queued for the other workers, delivered to the worker's own
clients).  It does not wait for remote deliveries, as ``sio.emit`` does not.
A worker that exits first, or does not answer within the timeout, turns the
answer into a 502 or 504 that says the emit may or may not have gone out.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any

import msgspec

from worker import control

__all__ = [
    "RESERVED_EVENTS",
    "EmitBody",
    "EmitError",
    "EmitRelay",
    "Target",
    "parse_body",
    "plan_emit",
]

Room = str | int
RESERVED_EVENTS = frozenset({"connect", "connect_error", "disconnect", "disconnecting",
                             "newListener", "removeListener"})


class EmitBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    event: str
    data: msgspec.Raw = msgspec.Raw(b"")
    args: list[msgspec.Raw] | None = None
    namespace: str = "/"
    room: Room | None = None
    rooms: list[Room] = []
    except_: Room | list[Room] = msgspec.field(default_factory=list, name="except")


class EmitError(Exception):
    """The request cannot be honoured; ``status`` is the HTTP answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


_decoder = msgspec.json.Decoder(EmitBody)


def parse_body(body: bytes) -> tuple[EmitBody, msgspec.Raw]:
    """The checked body and the arguments as one JSON array; EmitError(400) otherwise."""
    if not body.strip():
        raise EmitError(400, 'empty body: expected {"event": ..., "data": ...}')
    try:
        parsed = _decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise EmitError(400, f"invalid body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise EmitError(400, f"body is not JSON: {exc}") from None
    if not parsed.event:
        raise EmitError(400, "event must not be empty")
    if parsed.event in RESERVED_EVENTS:
        raise EmitError(400, f"event {parsed.event!r} is reserved by Socket.IO")
    if not parsed.namespace.startswith("/"):
        raise EmitError(400, f"namespace {parsed.namespace!r} must start with '/'")
    if parsed.room is not None and parsed.rooms:
        raise EmitError(400, "give room or rooms, not both")
    if parsed.args is not None and len(parsed.data):
        raise EmitError(400, "give data (one argument) or args (several), not both")
    if parsed.args is not None:
        args = msgspec.Raw(msgspec.json.encode(parsed.args))
    elif len(parsed.data) and bytes(parsed.data).strip() != b"null":
        # "data": null is no argument, as sio.emit(event, None) sends none.
        args = msgspec.Raw(b"[" + bytes(parsed.data) + b"]")
    else:
        args = msgspec.Raw(b"[]")
    return parsed, args


def _rooms(body: EmitBody) -> tuple[list[Room], list[Room]]:
    rooms = list(body.rooms) if body.room is None else [body.room]
    exclude = body.except_ if isinstance(body.except_, list) else [body.except_]
    return rooms, list(exclude)


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """A worker process, as the plan sees it."""

    key: Any  # opaque to the plan: the master's handle
    ready: bool  # takes new sessions (adapter subscribed)
    serving: bool  # still has clients (ready or draining)


def plan_emit(backend: str, workers: Sequence[Target], turn: int) -> tuple[list[Any], bool]:
    """Which workers get the emit, and whether they broadcast it through the adapter.

    ``turn`` spreads the single-worker case round-robin.  Raises EmitError(503)
    when no worker can take it.
    """
    if backend == "none":
        chosen = [w.key for w in workers if w.serving]
        if not chosen:
            raise EmitError(503, "no worker is serving")
        return chosen, False
    ready = [w.key for w in workers if w.ready]
    if not ready:
        raise EmitError(503, "no worker is ready")
    return [ready[turn % len(ready)]], True


class EmitRelay:
    """The master's side: send :class:`Emit`, await :class:`EmitDone`, count."""

    def __init__(self, *, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._ids = itertools.count(1)
        self._turn = itertools.count()
        # id -> (future, the worker it waits on)
        self._pending: dict[int, tuple[asyncio.Future[str], Any]] = {}
        # Counters
        self.accepted = 0
        self.failed = 0

    async def emit(
        self, backend: str, workers: Sequence[Target], body: EmitBody, args: msgspec.Raw,
        send: Any,
    ) -> int:
        """Hand the emit over; return how many workers took it.  ``send(key, msg)`` writes."""
        chosen, broadcast = plan_emit(backend, workers, next(self._turn))
        rooms, exclude = _rooms(body)
        loop = asyncio.get_running_loop()
        waits: list[tuple[int, asyncio.Future[str]]] = []
        for key in chosen:
            emit_id = next(self._ids)
            future: asyncio.Future[str] = loop.create_future()
            self._pending[emit_id] = (future, key)
            waits.append((emit_id, future))
            send(key, control.Emit(id=emit_id, event=body.event, args=args,
                                   namespace=body.namespace, rooms=rooms,
                                   except_rooms=exclude, broadcast=broadcast))
        try:
            async with asyncio.timeout(self.timeout_s):
                errors = [e for e in await asyncio.gather(*(f for _, f in waits)) if e]
        except TimeoutError:
            self.failed += 1
            raise EmitError(504, f"no confirmation from the worker within {self.timeout_s:g}s; "
                                 "the emit may or may not have been delivered") from None
        finally:
            for emit_id, _ in waits:
                self._pending.pop(emit_id, None)
        if errors:
            self.failed += 1
            raise EmitError(502, f"the worker could not emit: {errors[0]}")
        self.accepted += 1
        return len(chosen)

    def done(self, msg: control.EmitDone) -> None:
        entry = self._pending.get(msg.id)
        if entry is not None and not entry[0].done():
            entry[0].set_result(msg.error)

    def worker_gone(self, key: Any) -> None:
        for future, owner in list(self._pending.values()):
            if owner is key and not future.done():
                future.set_result("the worker exited before confirming; the emit may or "
                                  "may not have been delivered")
