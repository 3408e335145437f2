"""Run the app's ``@singleton`` functions in this worker while it holds their leases.

Theory of operation
-------------------
One polling task per singleton asks the lease backend every
:func:`~worker.lease.poll_interval` ("acquire or renew"), feeds the answer to
its :class:`~worker.lease.HolderLease`, and acts on the event:

* ``STARTED``: start the function in a task whose context carries its
  :class:`~worker.singleton.Tenure` (so the emit fence knows it);
* ``RENEWED``: move the watchdog timer to the new ``valid_until``;
* ``LOST`` (refused while holding, a late reply, or the watchdog firing):
  cancel the task at once.

Backends: :class:`MasterLeases` asks the master over the control channel
(``local``/``none`` adapter backends: one holder per host);
:class:`~worker.singleton_redis.RedisLeases` asks Redis and
:class:`~worker.singleton_amqp.AmqpLeases` RabbitMQ (one holder across
hosts).  A backend that does not answer within the poll interval changes
nothing: a holder keeps running until the watchdog ends its tenure, when the
validity of its last confirmed renewal runs out.

:meth:`SingletonRunner.stop` (drain, shutdown) is the handover: stop polling,
cancel the tasks, wait for them to finish, and only then release the leases,
so the successor never overlaps the drained holder.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import control
from .lease import Event, Grant, Holder, HolderLease, margin_for, poll_interval
from .singleton import SingletonSpec, Tenure, current_tenure, install_fence, registered

__all__ = [
    "LeaseBackend",
    "LeaseBackendError",
    "MasterLeases",
    "SingletonRunner",
    "broker_holder",
    "grant_from_record",
    "start_singletons",
    "tenure_record",
]

log = logging.getLogger("siocluster.singleton")

_BACKOFF_INITIAL_S = 1.0
_BACKOFF_MAX_S = 30.0


class LeaseBackendError(Exception):
    """The lease backend could not be asked (master gone, Redis down)."""


class LeaseBackend(Protocol):
    async def request(self, name: str, seq: int, eligible: bool) -> tuple[bool, Grant | None]:
        """Acquire or renew; (granted, the tenure in force)."""

    async def release(self, name: str, token: int) -> None: ...

    async def close(self) -> None: ...

    def set_lost_hook(self, lost: Callable[[str], None]) -> None:
        """``lost(name)``: the backend learned between polls that the lease is gone
        (a RabbitMQ lease connection closed); the others never call it."""


def broker_holder(slot: int, generation: int) -> Holder:
    """This worker process as a shared broker's lease names it (Redis, RabbitMQ):
    its key is unique across hosts and restarts."""
    host, pid = socket.gethostname(), os.getpid()
    return Holder(f"{host}:{pid}:{slot}.{generation:x}.{secrets.token_hex(4)}", host, slot, pid)


def tenure_record(holder: Holder, **extra: float | int) -> str:
    """A tenure as a broker stores it (JSON; ``extra``: ``since``, ``token``)."""
    return json.dumps({"id": holder.key, "host": holder.host, "slot": holder.slot,
                       "pid": holder.pid, **extra})


def grant_from_record(raw: Any) -> Grant | None:
    """The tenure a broker stored (:func:`tenure_record`), or None."""
    try:
        v = json.loads(raw)
        holder = Holder(str(v["id"]), str(v["host"]), int(v["slot"]), int(v["pid"]))
        return Grant(holder, int(v["token"]), float(v["since"]))
    except (ValueError, KeyError, TypeError):
        return None  # not ours: someone else's data under our prefix


def grant_from_view(view: control.LeaseView | None) -> Grant | None:
    if view is None:
        return None
    holder = Holder(key="", host=view.host, slot=view.slot, pid=view.pid)
    return Grant(holder, view.token, view.since)


def view_from_grant(grant: Grant | None) -> control.LeaseView | None:
    if grant is None:
        return None
    h = grant.holder
    return control.LeaseView(host=h.host, slot=h.slot, pid=h.pid, token=grant.token,
                             since=grant.since)


class MasterLeases:
    """The ``local`` backend: the master's lease table, over the control channel."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._waiting: dict[tuple[str, int], asyncio.Future[control.LeaseReply]] = {}

    def _send(self, message: control.ControlMessage) -> None:
        if self._writer.is_closing():
            raise LeaseBackendError("the master is gone")
        self._writer.write(control.encode(message))

    async def request(self, name: str, seq: int, eligible: bool) -> tuple[bool, Grant | None]:
        future: asyncio.Future[control.LeaseReply] = asyncio.get_running_loop().create_future()
        self._waiting[(name, seq)] = future
        try:
            self._send(control.LeaseRequest(name=name, seq=seq, eligible=eligible))
            reply = await future
        finally:
            self._waiting.pop((name, seq), None)
        return reply.granted, grant_from_view(reply.current)

    def on_reply(self, reply: control.LeaseReply) -> None:
        future = self._waiting.get((reply.name, reply.seq))
        if future is not None and not future.done():
            future.set_result(reply)

    async def release(self, name: str, token: int) -> None:
        self._send(control.LeaseRelease(name=name, token=token))

    def set_lost_hook(self, lost: Callable[[str], None]) -> None:
        pass  # the master's answers are all there is

    async def close(self) -> None:
        for future in self._waiting.values():
            future.cancel()


@dataclass(slots=True)
class _Singleton:
    spec: SingletonSpec
    lease: HolderLease
    run: asyncio.Task[None] | None = None
    watchdog: asyncio.TimerHandle | None = None
    errors: int = 0
    failing: bool = False  # the backend did not answer last time (logged once)
    poller: asyncio.Task[None] | None = field(default=None, repr=False)


class SingletonRunner:
    def __init__(
        self,
        specs: list[SingletonSpec],
        backend: LeaseBackend,
        *,
        lease_s: float,
        heartbeat_s: float,
    ) -> None:
        self.backend = backend
        self.interval = poll_interval(lease_s, heartbeat_s)
        self.stopping = False
        self._items = [
            _Singleton(spec, HolderLease(lease_s, margin_for(lease_s))) for spec in specs
        ]
        backend.set_lost_hook(self._lost)

    def _lost(self, name: str) -> None:
        """The backend knows the lease is gone now (not at the next poll): stop."""
        for item in self._items:
            if item.spec.name == name:
                self._apply(item, item.lease.drop())

    def start(self, sio: Any) -> None:
        install_fence(sio.manager)
        for item in self._items:
            item.poller = asyncio.get_running_loop().create_task(self._poll(item))

    # Polling

    async def _poll(self, item: _Singleton) -> None:
        name = item.spec.name
        while not self.stopping:
            started = time.monotonic()
            seq = item.lease.begin(started)
            try:
                granted, current = await asyncio.wait_for(
                    self.backend.request(name, seq, not self.stopping), self.interval
                )
            except (TimeoutError, LeaseBackendError, OSError) as exc:
                if not item.failing:
                    log.warning("singleton %r: lease backend did not answer: %r", name, exc)
                item.failing = True
            except Exception:
                # Keep polling: a holder that stops renewing only fences itself.
                if not item.failing:
                    log.exception("singleton %r: lease request failed", name)
                item.failing = True
            else:
                if item.failing:
                    log.info("singleton %r: lease backend answers again", name)
                item.failing = False
                self._apply(item, item.lease.on_reply(seq, granted, current, time.monotonic()))
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    def _apply(self, item: _Singleton, event: Event) -> None:
        name = item.spec.name
        if event is Event.STARTED:
            self._cancel_run(item)
            token = item.lease.token
            assert token is not None
            context = contextvars.copy_context()
            context.run(current_tenure.set, Tenure(name, item.lease, token))
            item.run = asyncio.get_running_loop().create_task(
                self._run(item), name=f"singleton:{name}", context=context
            )
            log.info("singleton %r: acquired the lease (token %d); running it", name, token)
            self._arm(item)
        elif event is Event.RENEWED:
            self._arm(item)
        elif event is Event.LOST:
            log.warning("singleton %r: lease lost; cancelling it", name)
            self._cancel_run(item)

    def _arm(self, item: _Singleton) -> None:
        if item.watchdog is not None:
            item.watchdog.cancel()
        delay = max(0.0, item.lease.valid_until - time.monotonic())
        item.watchdog = asyncio.get_running_loop().call_later(delay, self._expire, item)

    def _expire(self, item: _Singleton) -> None:
        item.watchdog = None
        self._apply(item, item.lease.expire(time.monotonic()))

    def _cancel_run(self, item: _Singleton) -> None:
        if item.watchdog is not None:
            item.watchdog.cancel()
            item.watchdog = None
        if item.run is not None and not item.run.done():
            item.run.cancel()

    async def _run(self, item: _Singleton) -> None:
        name, delay = item.spec.name, _BACKOFF_INITIAL_S
        while True:
            try:
                await item.spec.func()
            except asyncio.CancelledError:
                raise
            except Exception:
                item.errors += 1
                log.exception("singleton %r raised; starting it again in %.0fs", name, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX_S)
                continue
            log.info("singleton %r returned; it runs again only on another tenure", name)
            return

    # Reporting and stopping

    def report(self) -> dict[str, control.SingletonReport]:
        now = time.monotonic()
        return {
            item.spec.name: control.SingletonReport(
                held=item.lease.valid(now),
                current=view_from_grant(item.lease.current),
                errors=item.errors,
            )
            for item in self._items
        }

    async def stop(self, timeout_s: float) -> None:
        """Cancel, wait, then release: the successor starts after this holder ended."""
        self.stopping = True
        for item in self._items:
            if item.poller is not None:
                item.poller.cancel()
            self._cancel_run(item)
        runs = [item.run for item in self._items if item.run is not None]
        pollers = [item.poller for item in self._items if item.poller is not None]
        if runs or pollers:
            await asyncio.wait([*runs, *pollers], timeout=timeout_s)
        for item in self._items:
            token = item.lease.token
            if token is None:
                continue
            if item.run is not None and not item.run.done():
                # It ignores cancellation: let the lease lapse (its emits are fenced).
                log.warning("singleton %r did not stop when cancelled; its lease will lapse",
                            item.spec.name)
                continue
            item.lease.drop()
            with contextlib.suppress(LeaseBackendError, OSError, TimeoutError):
                await asyncio.wait_for(self.backend.release(item.spec.name, token), timeout_s)
            log.info("singleton %r: released the lease", item.spec.name)
        await self.backend.close()


def start_singletons(
    sio: Any,
    writer: asyncio.StreamWriter,
    *,
    backend_name: str,
    redis_url: str,
    channel: str,
    amqp_url: str = "",
    lease_s: float,
    heartbeat_s: float,
    slot: int,
    generation: int,
) -> tuple[SingletonRunner, MasterLeases | None] | None:
    """Start polling for the app's singletons; None when it declared none.

    Returns the runner, and the master backend when that is the one in use (its
    replies arrive on the control channel, which the caller reads).
    """
    specs = registered()
    if not specs:
        return None
    backend: LeaseBackend
    master: MasterLeases | None = None
    if backend_name == "redis":
        from .singleton_redis import RedisLeases

        backend = RedisLeases(redis_url, channel, slot=slot, generation=generation,
                              lease_s=lease_s)
    elif backend_name == "amqp":
        from .singleton_amqp import AmqpLeases

        backend = AmqpLeases(amqp_url, channel, slot=slot, generation=generation,
                             lease_s=lease_s)
    elif backend_name in ("local", "none"):
        backend = master = MasterLeases(writer)
    else:
        # A broker spanning hosts needs a lease there; the master's would give
        # one holder per host, silently.  Refuse loudly instead.
        log.error("singletons %s not started: no lease for adapter backend %r",
                  ", ".join(repr(s.name) for s in specs), backend_name)
        return None
    runner = SingletonRunner(specs, backend, lease_s=lease_s, heartbeat_s=heartbeat_s)
    runner.start(sio)
    log.info("singletons %s: asking the %s for their leases every %.2fs",
             ", ".join(repr(s.name) for s in specs),
             "master" if master is not None else f"{backend_name} server", runner.interval)
    return runner, master
