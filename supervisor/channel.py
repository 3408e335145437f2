"""The master's end of each worker's control channel: configure, read, dispatch.

Theory of operation
-------------------
Every worker is spawned with a socketpair (:mod:`supervisor.process`).
:meth:`ControlChannels.talk` opens the master's end as an asyncio stream,
sends :class:`worker.control.Configure` first, then reads length-prefixed
messages (:class:`worker.control.MessageReader`) until the worker closes it.

Each message is handled in one place, :meth:`ControlChannels.on_message`:

- connection-state recovery traffic (local backend) goes to the
  :class:`~supervisor.recovery.RecoveryDesk` first, which answers or
  broadcasts on the channels of the serving workers;
- ``Heartbeat`` and ``Ready`` update the worker's handle, the facts the
  master's plan (:mod:`supervisor.plan`) reads on its next tick;
- ``LeaseRequest``/``LeaseRelease`` go to the
  :class:`~supervisor.leasedesk.LeaseDesk` (the master knows which workers
  are leaving: :func:`supervisor.plan.lease_standing`);
- ``EmitDone`` completes a ``POST /emit`` (:class:`~supervisor.emit.EmitRelay`);
- ``BootFailed`` is kept for the exit that follows
  (:func:`supervisor.exits.after_exit`).

Backpressure for the log (local recovery): the master writes each entry to
every serving worker.  A worker whose channel holds more than ``_LAG_BYTES``
not yet taken makes the master stop reading log entries from the others
until it has caught up, so their emits wait (``worker.main``'s ``flow``)
instead of the entries piling up in the master.  It waits at most
``_LAG_WAIT_S`` per lagging worker: one that takes nothing for that long is
hung (the heartbeat timeout replaces it), and is no longer waited for, so
the others' heartbeats are never held up behind it for long.

Nothing here spawns, stops or decides the worker set.  ``POST /emit`` goes
out on the same channels (:meth:`ControlChannels.emit`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from worker import control

from .emit import EmitBody, Target
from .handle import WorkerHandle
from .state import WorkerState

if TYPE_CHECKING:
    from .master import Master

__all__ = ["ControlChannels"]

log = logging.getLogger("siocluster.master")


# What a worker's channel may hold, not yet taken, before the master stops reading
# log entries from the other workers; and how long it waits for one worker.
_LAG_BYTES = 1 << 20
_LAG_WAIT_S = 2.0


def _writable(h: WorkerHandle) -> bool:
    return h.writer is not None and not h.writer.is_closing()


class ControlChannels:
    def __init__(self, master: Master) -> None:
        self.master = master
        self._hung: set[tuple[int, int]] = set()  # (slot, generation) no longer waited for
        self.lag_waits = 0  # times a log entry waited for a lagging worker
        self.lag_timeouts = 0  # ... and gave up on it

    async def talk(self, h: WorkerHandle) -> None:
        """Configure the worker, then read its messages until the channel closes."""
        m = self.master
        try:
            reader, writer = await asyncio.open_unix_connection(sock=h.process.control)
        except OSError:
            return
        h.writer = writer
        writer.transport.set_write_buffer_limits(high=_LAG_BYTES)
        writer.write(
            control.encode(
                control.Configure(
                    slot=h.slot,
                    generation=h.generation,
                    socket_path=h.socket_path,
                    runtime_dir=m.directory.runtime_dir,
                    app=m.app,
                    config=m.config.for_worker(),
                    master_pid=os.getpid(),
                )
            )
        )
        messages = control.MessageReader(reader)
        try:
            while True:
                msg = await messages.next()
                if msg is None:
                    return
                self.on_message(h, msg)
                if isinstance(msg, control.LogAppend):
                    await self._pace()
        except ConnectionResetError:
            return
        except (OSError, control.FrameError) as exc:
            log.warning("worker %d control channel: %s", h.slot, exc)
        finally:
            self._hung.discard((h.slot, h.generation))

    async def _pace(self) -> None:
        """After a log entry went out: wait while a worker lags (see the module's doc)."""
        for o in list(self.master.handles):
            writer, key = o.writer, (o.slot, o.generation)
            if writer is None or writer.is_closing():
                continue
            if writer.transport.get_write_buffer_size() <= _LAG_BYTES:
                self._hung.discard(key)
                continue
            if key in self._hung:
                continue
            self.lag_waits += 1
            try:
                async with asyncio.timeout(_LAG_WAIT_S):
                    await writer.drain()
            except TimeoutError:
                self._hung.add(key)
                self.lag_timeouts += 1
                log.warning("worker %d has not taken the log entries written to it for "
                            "%.0f s; the others' emits no longer wait for it", o.slot,
                            _LAG_WAIT_S)
            except OSError:
                pass  # that channel is gone: its worker's exit is handled elsewhere

    def _serving_writers(self) -> list[Callable[[bytes], None]]:
        return [
            h.writer.write for h in self.master.handles
            if h.writer is not None and not h.writer.is_closing()
            and h.state in (WorkerState.READY, WorkerState.DRAINING)
        ]

    def on_message(self, h: WorkerHandle, msg: control.ControlMessage) -> None:
        m = self.master
        now = time.monotonic()
        if m.recovery is not None and h.writer is not None and m.recovery.on_message(
            (h.slot, h.generation), msg, h.writer.write, self._serving_writers
        ):
            return
        match msg:
            case control.Heartbeat():
                self._heartbeat(h, msg, now)
            case control.LeaseRequest():
                reply = m.lease_desk.request(
                    h, msg, m.lease_standing(h),
                    [m.lease_standing(o) for o in m.handles if o is not h],
                    now=now, wall=time.time())
                if _writable(h):
                    assert h.writer is not None
                    h.writer.write(control.encode(reply))
            case control.LeaseRelease():
                m.lease_desk.release(h, msg)
            case control.Ready():
                self._ready(h, msg, now)
            case control.EmitDone():
                m.emit_relay.done(msg)
            case control.BootFailed():
                h.boot_error, h.boot_traceback = msg.error, msg.traceback

    def _heartbeat(self, h: WorkerHandle, msg: control.Heartbeat, now: float) -> None:
        m = self.master
        h.last_heartbeat_mono = now
        h.connections = msg.connections
        h.handshakes_reported = msg.handshakes_total
        h.loop_lag_s = msg.loop_lag_s
        h.messages_total = msg.messages_total
        h.guards = msg.guards
        h.gate = msg.gate
        if msg.gate_latency:
            self._gate_latency(h, msg.gate_latency)
        h.adapter = msg.adapter
        h.emits, h.external_refused = msg.emits, msg.external_refused
        h.recovery = msg.recovery
        if m.balancer.limits.max_sessions_per_ip:
            m.balancer.sessions.reported((h.slot, h.generation), msg.sessions_by_ip, now)
        if msg.singletons:
            m.singletons.observe(msg.singletons)
        m.directory.invalidate()

    def _gate_latency(self, h: WorkerHandle, reports: dict[str, control.LatencyReport]) -> None:
        """What the worker's gate answered since its last heartbeat goes into the
        balancer's histograms, with what the master relayed itself."""
        latency = self.master.balancer.stats.latency
        for kind, now in reports.items():
            hist = latency.get(kind)
            before = h.gate_latency.get(kind)
            if hist is None or not hist.absorb(before.counts if before else (),
                                               before.total_s if before else 0.0,
                                               now.counts, now.total_s):
                log.warning("worker %d: a latency report for %r that does not fit; ignored",
                            h.slot, kind)
            h.gate_latency[kind] = now  # the next report counts from here

    def _ready(self, h: WorkerHandle, msg: control.Ready, now: float) -> None:
        m = self.master
        if h.state is not WorkerState.STARTING:
            return
        h.state = WorkerState.READY
        h.ready_mono = h.last_heartbeat_mono = now
        h.engineio_path = m.directory.engineio_path = msg.engineio_path
        h.ping_budget_s = msg.ping_interval_s + msg.ping_timeout_s
        m.slot_record(h.slot).ever_ready = True
        m.directory.invalidate()
        log.info("worker %d pid %d ready in %.2fs", h.slot, h.pid, now - h.started_mono)
        m.events.add("ready", f"worker {h.slot} pid {h.pid} ready in "
                     f"{now - h.started_mono:.2f}s", slot=h.slot)
        if h.ping_budget_s >= m.config.balancer.upstream_timeout_s:
            log.warning(
                "balancer.upstream_timeout_s (%.0fs) should exceed the app's "
                "ping_interval + ping_timeout (%.0fs), or long-polls will be cut",
                m.config.balancer.upstream_timeout_s, h.ping_budget_s,
            )

    async def emit(self, body: EmitBody, args: Any) -> int:
        """``POST /emit``: hand the emit to the worker(s) :mod:`.emit` chooses."""
        m = self.master
        targets = [
            # A draining worker no longer reads its control channel.
            Target(h, ready=h.state is WorkerState.READY and _writable(h),
                   serving=h.state is WorkerState.READY and _writable(h))
            for h in m.handles
        ]

        def send(h: WorkerHandle, msg: control.Emit) -> None:
            assert h.writer is not None
            h.writer.write(control.encode(msg))

        return await m.emit_relay.emit(m.config.adapter.backend, targets, body, args, send)
