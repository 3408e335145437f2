"""The master process: one lifecycle owner for listeners and workers.

Theory of operation
-------------------
Signal handlers and admin requests only enqueue a :class:`Command`.  One loop
(:meth:`Master._main_loop`) takes commands and, every tick, reconciles the
set of worker processes with the desired count: it spawns what is missing
(when the slot's backoff has passed), retires what is surplus, and stops
workers that missed heartbeats or never became ready.  Process exits arrive
through a pidfd per worker; what happens next is decided by the pure
:func:`supervisor.policy.decide_restart`.

A worker is recycled gracefully (reload, RSS limit, lifetime) by starting its
replacement in the same slot, waiting until the replacement is ready, and
only then draining the old generation; routing tells the two apart by the
generation encoded in each sid.

:meth:`Master._shutdown` is the one place the stop order is written: stop
accepting on the public port, drain every worker, wait, kill what is left,
close the listeners, remove the runtime directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web

from balancer.frontdoor import FrontDoor
from balancer.proxy import Balancer
from balancer.routing import WorkerView
from worker import control

from .admin import make_admin_app
from .commands import SIGNALS, Command, DrainWorker, Reload, Scale, ScaleBy, Stop, scaled
from .config import Config, keep_restart_only
from .emit import EmitBody, EmitRelay, Target
from .events import EventLog
from .exceptions import ConfigError, Halt
from .fdlimit import FdUsage, raise_nofile_limit
from .handle import SlotRecord, WorkerHandle
from .hosts import HostRegistryError, HostsService, hosts_service
from .leasedesk import LeaseDesk
from .plan import (
    DropSlot,
    FinishRecycle,
    Kill,
    PlanAction,
    PopReload,
    Recycle,
    Retire,
    SlotFacts,
    Spawn,
    StopHard,
    Timeouts,
    WorkerFacts,
    plan,
)
from .policy import Action, ExitCause, classify_exit, decide_restart
from .process import spawn_worker
from .recovery import RecoveryDesk
from .sampling import Sampler, recycle_cause
from .state import WorkerState

__all__ = ["Master"]

log = logging.getLogger("siocluster.master")

_TICK_S = 0.1
_SAMPLE_EVERY_S = 2.0
_NO_IDLE_LIMIT_S = 365 * 86400.0
# Exits we asked for: the slot is not restarted for them.
_RETIRED = frozenset({ExitCause.RELOAD, ExitCause.SCALE, ExitCause.SHUTDOWN})


def _writable(h: WorkerHandle) -> bool:
    return h.writer is not None and not h.writer.is_closing()


class Master:
    def __init__(
        self,
        config: Config,
        app: str,
        *,
        cwd: str,
        reload_config: Callable[[], Config] | None = None,
    ) -> None:
        self.config = config
        self.app = app
        self.cwd = cwd
        self._reload_config = reload_config
        self.desired = config.effective_workers()
        self.handles: list[WorkerHandle] = []
        self.slots: dict[int, SlotRecord] = {}
        self.commands: asyncio.Queue[Command] = asyncio.Queue()
        self.halt: Halt | None = None
        self.stopping = False
        self.started_at = time.time()
        self.runtime_dir = ""
        self._generation = random.randrange(1 << 16)
        self._views: list[WorkerView] | None = None
        self._engineio_path = "/socket.io/"
        self._recycling: dict[int, WorkerHandle] = {}  # slot -> old handle awaiting its successor
        self._reload_queue: list[int] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sampler = Sampler()
        self.balancer = Balancer(config.balancer, config.limits, self,
                                 peer_token=config.cluster.peer_token)
        self._balancer_runner: web.ServerRunner | None = None
        self._front_door: FrontDoor | None = None
        self._admin_runner: web.AppRunner | None = None
        self.restart_causes: dict[str, int] = {}
        self.ports = (config.balancer.port, config.admin.port)  # (public, admin) once bound
        # @singleton leases of this host (local backend) and what workers report of them.
        self.lease_desk = LeaseDesk(config.cluster.singleton_lease_s, socket.gethostname())
        self.singletons = self.lease_desk.book
        self.emit_relay = EmitRelay(timeout_s=config.adapter.request_timeout_s)
        # Connection-state recovery, local backend: the sessions and packet log outlive
        # the workers here (with redis, Redis holds them).
        self.recovery = (RecoveryDesk(config.recovery)
                         if config.recovery.enabled and config.adapter.backend == "local"
                         else None)
        self.hosts = hosts_service(config, self._host_counts)
        # What happened lately, for the dashboard (supervisor/events.py).
        self.events = EventLog()

    def _host_counts(self) -> tuple[int, int]:
        return len(self.handles), sum(h.connections for h in self.handles)

    # WorkerDirectory, for the balancer

    @property
    def engineio_path(self) -> str:
        return self._engineio_path

    def views(self) -> Sequence[WorkerView]:
        if self._views is None:
            self._views = [
                WorkerView(
                    slot=h.slot,
                    generation=h.generation,
                    accepting=h.state is WorkerState.READY,
                    serving=h.state in (WorkerState.READY, WorkerState.DRAINING),
                    load=h.load,
                )
                for h in self.handles
            ]
        return self._views

    def _invalidate(self) -> None:
        self._views = None

    @property
    def host_id(self) -> str:
        return self.hosts.host_id if self.hosts is not None else ""

    def live_hosts(self) -> frozenset[str]:
        return self.hosts.book.live_ids() if self.hosts is not None else frozenset()

    def peer_address(self, host: str) -> str | None:
        return self.hosts.book.address(host) if self.hosts is not None else None

    def note_peer(self, host: str, error: str | None) -> None:
        if self.hosts is not None:
            self.hosts.book.note_forward(host, error)

    def socket_path(self, slot: int, generation: int) -> str:
        return os.path.join(self.runtime_dir, f"worker-{slot}-{generation:x}.sock")

    def handoff_channel(self, slot: int, generation: int) -> socket.socket | None:
        for h in self.handles:
            if h.slot == slot and h.generation == generation:
                return h.process.handoff
        return None

    def note_handshake(self, slot: int, generation: int) -> None:
        for h in self.handles:
            if h.slot == slot and h.generation == generation:
                h.handshakes_assigned += 1
                self._invalidate()
                return

    # Lifecycle

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        before, now, hard = raise_nofile_limit()
        log.info("open files limit: soft %d -> %d (hard %d)", before, now, hard)
        self.runtime_dir = self.config.cluster.runtime_dir or tempfile.mkdtemp(
            prefix="siocluster-"
        )
        os.makedirs(self.runtime_dir, mode=0o700, exist_ok=True)
        os.chmod(self.runtime_dir, 0o700)
        try:
            await self._start_listeners()
        except OSError as exc:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)
            raise Halt(1, f"cannot listen: {exc.strerror or exc}") from None
        for signum, command in SIGNALS.items():
            loop.add_signal_handler(signum, self.commands.put_nowait, command)
        b, a = self.config.balancer, self.config.admin
        log.info(
            "siocluster: %s with %d workers on http://%s:%d (admin http://%s:%d)",
            self.app, self.desired, b.host, self.ports[0], a.host, self.ports[1],
        )
        if self.recovery is not None:
            self.recovery.start()
        log.info("dashboard: http://%s:%d/dashboard", a.host, self.ports[1])
        try:
            if self.hosts is not None:
                await self._join_hosts(self.hosts)
            await self._main_loop()
        finally:
            if self.recovery is not None:
                await self.recovery.close()
            await self._shutdown()
        if self.halt is not None:
            raise self.halt
        return 0

    async def _start_listeners(self) -> None:
        b, a = self.config.balancer, self.config.admin
        self._balancer_runner = web.ServerRunner(
            self.balancer.make_server(
                access_log=None,
                max_line_size=self.config.limits.max_header_bytes,
                max_field_size=self.config.limits.max_header_bytes,
                max_headers=self.config.limits.max_header_count,
                # 0 means no idle limit; aiohttp would read it as no keep-alive.
                keepalive_timeout=self.config.limits.idle_timeout_s or _NO_IDLE_LIMIT_S,
            ),
            handle_signals=False,
            shutdown_timeout=1.0,
        )
        await self._balancer_runner.setup()
        assert self._balancer_runner.server is not None
        self._front_door = FrontDoor(
            b, self.config.limits, self, self.balancer.stats, self._balancer_runner.server,
            self.balancer,
        )
        self._front_door.bind()
        self._front_door.start()
        self._admin_runner = web.AppRunner(
            make_admin_app(self), handle_signals=False, access_log=None, shutdown_timeout=1.0
        )
        await self._admin_runner.setup()
        await web.TCPSite(self._admin_runner, a.host, a.port, reuse_address=True).start()
        # The ports actually bound (a config may say 0: "any free port").
        admin_address = self._admin_runner.addresses[0]
        self.ports = (self._front_door.port, int(admin_address[1]))

    async def _join_hosts(self, hosts: HostsService) -> None:
        try:
            await hosts.start(self.ports[0])
        except HostRegistryError as exc:
            self.hosts = None  # never joined: nothing to leave
            raise Halt(2, str(exc)) from None

    async def _main_loop(self) -> None:
        last_sample = 0.0
        while not self.stopping:
            try:
                command = await asyncio.wait_for(self.commands.get(), _TICK_S)
            except TimeoutError:
                command = None
            if command is not None and self._apply(command):
                return
            now = time.monotonic()
            self._reconcile(now)
            if now - last_sample >= _SAMPLE_EVERY_S:
                last_sample = now
                self._sample(now)
                self.balancer.reap_idle()

    def _apply(self, command: Command) -> bool:
        """Apply one command; True means stop."""
        match command:
            case Stop():
                log.info("stopping (graceful, up to %.0fs)",
                         self.config.cluster.graceful_timeout_s)
                return True
            case Scale() | ScaleBy():
                workers = scaled(self.desired, command)
                log.info("scaling from %d to %d workers", self.desired, workers)
                self.events.add("scale", f"scaling from {self.desired} to {workers} workers")
                self.desired = workers
            case DrainWorker(slot, pid):
                self._drain(slot, pid)
            case Reload():
                self._start_reload()
        return False

    def _start_reload(self) -> None:
        if self._reload_config is not None:
            try:
                new = self._reload_config()
            except ConfigError as exc:
                log.error("reload aborted, config unchanged: %s", exc)
                self.events.add("reload", f"reload aborted, config unchanged: {exc}",
                                level="error")
                return
            new, kept = keep_restart_only(self.config, new)
            if kept:
                log.warning("reload: %s changed; the master applies that only on a full "
                            "restart, keeping the running values", ", ".join(kept))
            # A runtime scale (TTIN/TTOU, `siocluster scale`) survives a reload
            # unless the configured worker count itself changed.
            if new.cluster.workers != self.config.cluster.workers:
                self.desired = new.effective_workers()
            self.config = new
        for record in self.slots.values():
            if record.parked is WorkerState.FAILED:
                record.unpark()
                record.restart_times = []
        self._reload_queue = sorted(
            {h.slot for h in self.handles if h.stop_cause is None and h.slot < self.desired}
        )
        log.info("rolling reload of %d workers", len(self._reload_queue))
        self.events.add("reload", f"config reloaded; rolling {len(self._reload_queue)} workers")

    # Reconciliation

    def _slot(self, slot: int) -> SlotRecord:
        record = self.slots.get(slot)
        if record is None:
            record = self.slots[slot] = SlotRecord(slot)
        return record

    def _active(self, slot: int) -> list[WorkerHandle]:
        return [h for h in self.handles if h.slot == slot and h.stop_cause is None]

    def _reconcile(self, now: float) -> None:
        """Decide (:func:`supervisor.plan.plan`, pure), then act."""
        health = self.config.health
        actions = plan(
            now,
            self.desired,
            {s: SlotFacts(s, r.parked, r.restart_at_mono) for s, r in self.slots.items()},
            [self._facts(h) for h in self.handles],
            reload_queue=self._reload_queue,
            recycling={s: (h.slot, h.generation) for s, h in self._recycling.items()},
            timeouts=Timeouts(self.config.cluster.boot_timeout_s, health.heartbeat_timeout_s),
        )
        for action in actions:
            self._execute(action, now)

    @staticmethod
    def _facts(h: WorkerHandle) -> WorkerFacts:
        return WorkerFacts(h.slot, h.generation, h.state, h.stop_cause, h.started_mono,
                           h.last_heartbeat_mono, h.kill_at_mono)

    def _handle(self, key: tuple[int, int]) -> WorkerHandle:
        return next(h for h in self.handles if (h.slot, h.generation) == key)

    def _execute(self, action: PlanAction, now: float) -> None:
        match action:
            case Spawn(slot, restart):
                record = self._slot(slot)
                if restart:
                    record.restarts += 1
                    record.restart_times.append(now)
                record.unpark()
                self._spawn(slot)
            case Retire(key, cause):
                self._retire(self._handle(key), cause)
            case DropSlot(slot):
                del self.slots[slot]
            case PopReload(slot):
                self._reload_queue.remove(slot)
            case Recycle(key, cause):
                self._recycle(self._handle(key), cause)
            case FinishRecycle(slot):
                del self._recycling[slot]
            case Kill(key):
                h = self._handle(key)
                log.warning("worker %d pid %d did not stop in time; SIGKILL", h.slot, h.pid)
                h.process.kill()
                h.kill_at_mono = None
            case StopHard(key, cause, why):
                self._stop_hard(self._handle(key), cause, why)

    def _spawn(self, slot: int) -> WorkerHandle:
        self._generation += 1
        cpu = None
        if self.config.cluster.pin_cpus:
            cpu = slot % (os.cpu_count() or 1)
        process = spawn_worker(cwd=self.cwd, cpu=cpu)
        handle = WorkerHandle(
            slot=slot,
            generation=self._generation,
            socket_path=self.socket_path(slot, self._generation),
            process=process,
        )
        self.handles.append(handle)
        self._invalidate()
        loop = asyncio.get_running_loop()
        loop.add_reader(process.pidfd, self._on_exit, handle)
        self._spawn_task(self._talk(handle))
        log.info("worker %d started: pid %d, generation %x", slot, handle.pid, handle.generation)
        self.events.add("started", f"worker {slot} started: pid {handle.pid}", slot=slot)
        return handle

    def _spawn_task(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _recycle(self, old: WorkerHandle, cause: ExitCause) -> None:
        """Start a successor in the slot; retire ``old`` once the successor is ready."""
        if old.slot in self._recycling:
            return
        log.info("worker %d pid %d: recycling (%s)", old.slot, old.pid, cause)
        kind = {ExitCause.RELOAD: "roll", ExitCause.DRAIN: "drain"}.get(cause, "recycle")
        self.events.add(kind,
                        f"worker {old.slot} pid {old.pid}: replacing it ({cause})", slot=old.slot)
        self._recycling[old.slot] = old
        self._spawn(old.slot)

    def _retire(self, h: WorkerHandle, cause: ExitCause) -> None:
        """Graceful: no new sessions, the worker closes its sessions and exits."""
        if h.stop_cause is not None:
            return
        h.stop_cause = cause
        if h.state in (WorkerState.STARTING, WorkerState.READY):
            h.state = WorkerState.DRAINING
        self._invalidate()
        timeout = self.config.cluster.graceful_timeout_s
        # A successor takes the sessions: spread the closes (a full stop has none).
        spread = 0.0 if cause is ExitCause.SHUTDOWN else self.config.health.drain_spread_s
        writer = h.writer
        if writer is not None and not writer.is_closing():
            writer.write(control.encode(control.Drain(timeout_s=timeout, spread_s=spread)))
        else:
            h.process.terminate()
        h.kill_at_mono = time.monotonic() + timeout + self.config.health.kill_grace_s

    def _stop_hard(self, h: WorkerHandle, cause: ExitCause, why: str) -> None:
        log.error("worker %d pid %d: %s; SIGTERM", h.slot, h.pid, why)
        self.events.add("restart", f"worker {h.slot} pid {h.pid}: {why}; SIGTERM",
                        level="error", slot=h.slot)
        h.stop_cause = cause
        h.process.terminate()
        h.kill_at_mono = time.monotonic() + self.config.health.kill_grace_s

    # One worker's control channel

    async def _talk(self, h: WorkerHandle) -> None:
        try:
            reader, writer = await asyncio.open_unix_connection(sock=h.process.control)
        except OSError:
            return
        h.writer = writer
        writer.write(
            control.encode(
                control.Configure(
                    slot=h.slot,
                    generation=h.generation,
                    socket_path=h.socket_path,
                    runtime_dir=self.runtime_dir,
                    app=self.app,
                    config=self.config.for_worker(),
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
                self._on_message(h, msg)
        except ConnectionResetError:
            return
        except (OSError, control.FrameError) as exc:
            log.warning("worker %d control channel: %s", h.slot, exc)

    def _serving_writers(self) -> list[Callable[[bytes], None]]:
        return [
            h.writer.write for h in self.handles
            if h.writer is not None and not h.writer.is_closing()
            and h.state in (WorkerState.READY, WorkerState.DRAINING)
        ]

    def _on_message(self, h: WorkerHandle, msg: control.ControlMessage) -> None:
        now = time.monotonic()
        if self.recovery is not None and h.writer is not None and self.recovery.on_message(
            (h.slot, h.generation), msg, h.writer.write, self._serving_writers
        ):
            return
        if isinstance(msg, control.Heartbeat):
            h.last_heartbeat_mono = now
            h.connections = msg.connections
            h.handshakes_reported = msg.handshakes_total
            h.loop_lag_s = msg.loop_lag_s
            h.messages_total = msg.messages_total
            h.guards = msg.guards
            h.adapter = msg.adapter
            h.emits, h.external_refused = msg.emits, msg.external_refused
            h.recovery = msg.recovery
            if self.balancer.limits.max_sessions_per_ip:
                self.balancer.sessions.reported(
                    (h.slot, h.generation), msg.sessions_by_ip, now
                )
            if msg.singletons:
                self.singletons.observe(msg.singletons)
            self._invalidate()
        elif isinstance(msg, control.LeaseRequest):
            reply = self.lease_desk.request(
                h, msg, self._lease_standing(h),
                [self._lease_standing(o) for o in self.handles if o is not h],
                now=now, wall=time.time())
            if h.writer is not None and not h.writer.is_closing():
                h.writer.write(control.encode(reply))
        elif isinstance(msg, control.LeaseRelease):
            self.lease_desk.release(h, msg)
        elif isinstance(msg, control.Ready):
            if h.state is not WorkerState.STARTING:
                return
            h.state = WorkerState.READY
            h.ready_mono = h.last_heartbeat_mono = now
            h.engineio_path = self._engineio_path = msg.engineio_path
            h.ping_budget_s = msg.ping_interval_s + msg.ping_timeout_s
            self._slot(h.slot).ever_ready = True
            self._invalidate()
            log.info("worker %d pid %d ready in %.2fs", h.slot, h.pid, now - h.started_mono)
            self.events.add("ready", f"worker {h.slot} pid {h.pid} ready in "
                            f"{now - h.started_mono:.2f}s", slot=h.slot)
            if h.ping_budget_s >= self.config.balancer.upstream_timeout_s:
                log.warning(
                    "balancer.upstream_timeout_s (%.0fs) should exceed the app's "
                    "ping_interval + ping_timeout (%.0fs), or long-polls will be cut",
                    self.config.balancer.upstream_timeout_s, h.ping_budget_s,
                )
        elif isinstance(msg, control.EmitDone):
            self.emit_relay.done(msg)
        elif isinstance(msg, control.BootFailed):
            h.boot_error, h.boot_traceback = msg.error, msg.traceback

    # Singleton leases (local backend): supervisor/leasedesk.py decides

    def _lease_standing(self, h: WorkerHandle) -> tuple[bool, bool]:
        serving = h.state is WorkerState.READY and h.stop_cause is None
        leaving = h.slot in self._reload_queue or self._recycling.get(h.slot) is h
        return serving, leaving

    def _on_exit(self, h: WorkerHandle) -> None:
        returncode = h.process.poll()
        if returncode is None:
            return
        loop = asyncio.get_running_loop()
        loop.remove_reader(h.process.pidfd)
        h.process.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(h.socket_path)
        self.handles.remove(h)
        self.emit_relay.worker_gone(h)
        self.balancer.forget(h.slot, h.generation)
        self.lease_desk.holder_exited(h)
        if self.recovery is not None:
            self.recovery.worker_gone((h.slot, h.generation))
        self._sampler.forget(h.pid)
        expected = h.stop_cause in _RETIRED
        drained = expected and h.state is WorkerState.DRAINING
        h.state = WorkerState.STOPPED if drained else WorkerState.DEAD
        self._invalidate()
        record = self._slot(h.slot)
        cause, text = classify_exit(returncode, h.stop_cause, h.boot_error)
        record.last_exit = text
        if expected or self.stopping:
            log.info("worker %d pid %d %s", h.slot, h.pid, text)
            self.events.add("exit", f"worker {h.slot} pid {h.pid} {text}", slot=h.slot)
            return
        self.restart_causes[cause] = self.restart_causes.get(cause, 0) + 1
        now = time.monotonic()
        decision = decide_restart(
            record.restart_times, now, cause, self.config.health, ever_ready=self._ever_ready()
        )
        if decision.action is Action.HALT:
            detail = (h.boot_traceback or "").rstrip()
            self.halt = Halt(control.BOOT_FAILED_EXIT, f"{h.boot_error}\n{detail}".rstrip())
            self.events.add("restart", f"worker {h.slot} pid {h.pid} {text}; stopping",
                            level="error", slot=h.slot)
            self.commands.put_nowait(Stop())
            return
        if self._active(h.slot):
            log.warning("worker %d pid %d %s", h.slot, h.pid, text)
            self.events.add("restart", f"worker {h.slot} pid {h.pid} {text}; its successor runs",
                            level="warning", slot=h.slot)
            return  # a successor already runs in the slot
        if decision.action is Action.FAIL:
            record.park(WorkerState.FAILED, reason=decision.reason)
            log.error("worker %d pid %d %s; %s", h.slot, h.pid, text, decision.reason)
            self.events.add("restart", f"worker {h.slot} pid {h.pid} {text}; {decision.reason}",
                            level="error", slot=h.slot)
            if h.boot_traceback:
                log.error("worker %d traceback:\n%s", h.slot, h.boot_traceback.rstrip())
            return
        backoff = decision.action is Action.BACKOFF
        record.park(WorkerState.BACKOFF if backoff else WorkerState.DEAD,
                    restart_at=now + decision.delay_s, reason=decision.reason if backoff else None)
        log.warning(
            "worker %d pid %d %s; restarting in %.1fs%s",
            h.slot, h.pid, text, decision.delay_s,
            f" ({decision.reason})" if decision.action is Action.BACKOFF else "",
        )
        why = f" ({decision.reason})" if backoff else ""
        self.events.add("restart", f"worker {h.slot} pid {h.pid} {text}; "
                        f"restarting in {decision.delay_s:.1f}s{why}", level="warning",
                        slot=h.slot)

    async def emit(self, body: EmitBody, args: Any) -> int:
        """``POST /emit``: hand the emit to the worker(s) :mod:`.emit` chooses."""
        targets = [
            # A draining worker no longer reads its control channel.
            Target(h, ready=h.state is WorkerState.READY and _writable(h),
                   serving=h.state is WorkerState.READY and _writable(h))
            for h in self.handles
        ]

        def send(h: WorkerHandle, msg: control.Emit) -> None:
            assert h.writer is not None
            h.writer.write(control.encode(msg))

        return await self.emit_relay.emit(self.config.adapter.backend, targets, body, args, send)

    def _drain(self, slot: int, pid: int | None) -> None:
        """An operator's drain: the successor starts first, then the worker drains."""
        active = [h for h in self._active(slot) if pid is None or h.pid == pid]
        if not active or slot in self._recycling:
            who = f"worker {slot}" + ("" if pid is None else f" pid {pid}")
            why = "already being replaced" if active else "no such worker"
            log.info("drain of %s ignored: %s", who, why)
            self.events.add("drain", f"drain of {who} ignored: {why}", slot=slot)
            return
        self._recycle(active[-1], ExitCause.DRAIN)

    def _ever_ready(self) -> bool:
        return any(r.ever_ready for r in self.slots.values())

    # Sampling (psutil) and the RSS / lifetime policies (supervisor/sampling.py)

    def _sample(self, now: float) -> None:
        for h in self.handles:
            if not self._sampler.sample(h):
                continue
            if h.state is not WorkerState.READY or h.stop_cause is not None:
                continue
            if self._recycling.get(h.slot) is h:
                continue  # its successor is already starting: count the recycle once
            ready_for = None if h.ready_mono is None else now - h.ready_mono
            cause = recycle_cause(h.sample["rss_bytes"], ready_for, h.generation,
                                  self.config.health)
            if cause is ExitCause.RSS:
                log.warning(
                    "worker %d pid %d RSS %.0f MB over max_rss_mb=%d",
                    h.slot, h.pid, h.sample["rss_bytes"] / 1048576, self.config.health.max_rss_mb,
                )
            if cause is not None:
                self._count_restart(cause)
                self._recycle(h, cause)

    def _count_restart(self, cause: ExitCause) -> None:
        self.restart_causes[cause] = self.restart_causes.get(cause, 0) + 1

    def master_sample(self) -> dict[str, Any]:
        return self._sampler.master()

    def fd_usage(self) -> list[FdUsage]:
        return self._sampler.fd_usage(self.handles)

    # Shutdown: the one place the order is written

    async def _shutdown(self) -> None:
        self.stopping = True
        if self._front_door is not None:
            await self._front_door.stop()  # 1. stop accepting
        if self.hosts is not None:
            await self.hosts.stop()  # and leave the cluster: peers 400 our sids at once
        for h in list(self.handles):  # 2. drain
            self._retire(h, ExitCause.SHUTDOWN)
        deadline = time.monotonic() + self.config.cluster.graceful_timeout_s
        while self.handles and time.monotonic() < deadline:  # 3. wait
            await asyncio.sleep(0.05)
        for h in list(self.handles):  # 4. kill what is left
            log.warning("worker %d pid %d still running; SIGKILL", h.slot, h.pid)
            h.process.kill()
        kill_deadline = time.monotonic() + 2.0
        while self.handles and time.monotonic() < kill_deadline:
            await asyncio.sleep(0.02)
        for task in list(self._tasks):
            task.cancel()
        if self._balancer_runner is not None:  # 5. close listeners
            await self._balancer_runner.cleanup()
        await self.balancer.close()
        if self._admin_runner is not None:
            await self._admin_runner.cleanup()
        if not self.config.cluster.runtime_dir:  # 6. remove what we created
            shutil.rmtree(self.runtime_dir, ignore_errors=True)
        log.info("stopped")
