"""The master process: one lifecycle owner for listeners and workers.

Theory of operation
-------------------
Signal handlers and admin requests only enqueue a :class:`Command`.  One loop
(:meth:`Master._main_loop`) takes commands and, every tick, reconciles the
set of worker processes with the desired count: the pure
:func:`supervisor.plan.plan` decides from frozen facts (spawn what is
missing once the slot's backoff has passed, retire what is surplus, roll a
reload, stop workers that missed heartbeats or never became ready), and
:class:`~supervisor.actions.WorkerActions` does it.  Process exits arrive
through a pidfd per worker (:class:`~supervisor.reaping.Reaper`); what
happens next is decided by the pure :func:`supervisor.exits.after_exit`.
What workers say arrives on their control channels
(:class:`~supervisor.channel.ControlChannels`) and becomes the facts of the
next tick.

A worker is recycled gracefully (reload, RSS limit, lifetime) by starting its
replacement in the same slot, waiting until the replacement is ready, and
only then draining the old generation; routing tells the two apart by the
generation encoded in each sid.

:meth:`Master._shutdown` is the one place the stop order is written: stop
accepting on the public port, drain every worker, wait, kill what is left,
close the listeners (:mod:`supervisor.listeners`), remove the runtime
directory.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from typing import Any

from balancer.proxy import Balancer

from .actions import WorkerActions
from .admin import make_admin_app
from .channel import ControlChannels
from .commands import SIGNALS, Command, DrainWorker, Reload, Scale, ScaleBy, Stop, scaled
from .config import Config, reloaded
from .directory import MasterDirectory
from .emit import EmitBody, EmitRelay
from .events import EventLog
from .exceptions import ConfigError, Halt
from .fdlimit import FdUsage, raise_nofile_limit
from .handle import SlotRecord, WorkerHandle
from .hosts import HostRegistryError, HostsService, hosts_service
from .leasedesk import LeaseDesk
from .listeners import Listeners
from .plan import (
    SlotFacts,
    Timeouts,
    WorkerFacts,
    lease_standing,
    plan,
    reload_slots,
)
from .policy import ExitCause
from .reaping import Reaper
from .recovery import RecoveryDesk
from .sampling import Sampler, due_recycle
from .state import WorkerState

__all__ = ["Master"]

log = logging.getLogger("siocluster.master")

_TICK_S = 0.1
_SAMPLE_EVERY_S = 2.0


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
        self.reload_queue: list[int] = []
        self.sampler = Sampler()
        # What the balancer routes by (balancer/directory.py's WorkerDirectory).
        self.directory = MasterDirectory(self.handles, lambda: self.hosts)
        self.balancer = Balancer(config.balancer, config.limits, self.directory,
                                 peer_token=config.cluster.peer_token)
        self._listeners = Listeners(config, self.balancer, self.directory)
        # The workers' control channels, their exits, and what is done to them.
        self.channels = ControlChannels(self)
        self.reaper = Reaper(self)
        self.actions = WorkerActions(self)
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

    @property
    def runtime_dir(self) -> str:
        return self.directory.runtime_dir

    @property
    def host_id(self) -> str:
        return self.directory.host_id

    def live_hosts(self) -> frozenset[str]:
        return self.directory.live_hosts()

    # Lifecycle

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        before, now, hard = raise_nofile_limit()
        log.info("open files limit: soft %d -> %d (hard %d)", before, now, hard)
        runtime_dir = self.config.cluster.runtime_dir or tempfile.mkdtemp(prefix="siocluster-")
        self.directory.runtime_dir = runtime_dir
        os.makedirs(self.runtime_dir, mode=0o700, exist_ok=True)
        os.chmod(self.runtime_dir, 0o700)
        try:
            self.ports = await self._listeners.start(make_admin_app(self))
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
                self.actions.drain(slot, pid)
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
            new, self.desired, kept = reloaded(self.config, new, self.desired)
            if kept:
                log.warning("reload: %s changed; the master applies that only on a full "
                            "restart, keeping the running values", ", ".join(kept))
            self.config = new
        for record in self.slots.values():
            if record.parked is WorkerState.FAILED:
                record.unpark()
                record.restart_times = []
        self.reload_queue = reload_slots(self.desired, [self.facts(h) for h in self.handles])
        log.info("rolling reload of %d workers", len(self.reload_queue))
        self.events.add("reload", f"config reloaded; rolling {len(self.reload_queue)} workers")

    # Reconciliation

    def slot_record(self, slot: int) -> SlotRecord:
        record = self.slots.get(slot)
        if record is None:
            record = self.slots[slot] = SlotRecord(slot)
        return record

    def active(self, slot: int) -> list[WorkerHandle]:
        return [h for h in self.handles if h.slot == slot and h.stop_cause is None]

    def _reconcile(self, now: float) -> None:
        """Decide (:func:`supervisor.plan.plan`, pure), then act."""
        if self.halt is not None:
            # The cluster halts (a boot failure): its Stop may still be queued behind a
            # tick that timed out, and the plan would respawn the slot that failed.
            return
        health = self.config.health
        actions = plan(
            now,
            self.desired,
            {s: SlotFacts(s, r.parked, r.restart_at_mono) for s, r in self.slots.items()},
            [self.facts(h) for h in self.handles],
            reload_queue=self.reload_queue,
            recycling=self.actions.recycling_keys(),
            timeouts=Timeouts(self.config.cluster.boot_timeout_s, health.heartbeat_timeout_s),
        )
        for action in actions:
            self.actions.execute(action, now)

    @staticmethod
    def facts(h: WorkerHandle) -> WorkerFacts:
        return WorkerFacts(h.slot, h.generation, h.state, h.stop_cause, h.started_mono,
                           h.last_heartbeat_mono, h.kill_at_mono, pid=h.pid)

    # What the control channels (supervisor/channel.py) ask of the master

    def lease_standing(self, h: WorkerHandle) -> tuple[bool, bool]:
        """(serving, leaving) of a worker, for supervisor/leasedesk.py."""
        return lease_standing(self.facts(h), reload_queue=self.reload_queue,
                              recycling=self.actions.recycling_keys())

    async def emit(self, body: EmitBody, args: Any) -> int:
        """``POST /emit``: out on the workers' control channels."""
        return await self.channels.emit(body, args)

    def ever_ready(self) -> bool:
        return any(r.ever_ready for r in self.slots.values())

    # Sampling (psutil) and the RSS / lifetime policies (supervisor/sampling.py)

    def _sample(self, now: float) -> None:
        for h in self.handles:
            if not self.sampler.sample(h):
                continue
            ready_for = None if h.ready_mono is None else now - h.ready_mono
            cause = due_recycle(self.facts(h), h.sample["rss_bytes"], ready_for,
                                recycling=self.actions.recycling_keys(),
                                health=self.config.health)
            if cause is ExitCause.RSS:
                log.warning(
                    "worker %d pid %d RSS %.0f MB over max_rss_mb=%d",
                    h.slot, h.pid, h.sample["rss_bytes"] / 1048576, self.config.health.max_rss_mb,
                )
            if cause is not None:
                self.count_restart(cause)
                self.actions.recycle(h, cause)

    def count_restart(self, cause: ExitCause) -> None:
        self.restart_causes[cause] = self.restart_causes.get(cause, 0) + 1

    def master_sample(self) -> dict[str, Any]:
        return self.sampler.master()

    def fd_usage(self) -> list[FdUsage]:
        return self.sampler.fd_usage(self.handles)

    # Shutdown: the one place the order is written

    async def _shutdown(self) -> None:
        self.stopping = True
        await self._listeners.stop_accepting()  # 1. stop accepting
        if self.hosts is not None:
            await self.hosts.stop()  # and leave the cluster: peers 400 our sids at once
        for h in list(self.handles):  # 2. drain
            self.actions.retire(h, ExitCause.SHUTDOWN)
        deadline = time.monotonic() + self.config.cluster.graceful_timeout_s
        while self.handles and time.monotonic() < deadline:  # 3. wait
            await asyncio.sleep(0.05)
        for h in list(self.handles):  # 4. kill what is left
            log.warning("worker %d pid %d still running; SIGKILL", h.slot, h.pid)
            h.process.kill()
        kill_deadline = time.monotonic() + 2.0
        while self.handles and time.monotonic() < kill_deadline:
            await asyncio.sleep(0.02)
        for task in list(self.actions.tasks):
            task.cancel()
        await self._listeners.close()  # 5. close listeners (and the balancer's pools)
        if not self.config.cluster.runtime_dir:  # 6. remove what we created
            shutil.rmtree(self.runtime_dir, ignore_errors=True)
        log.info("stopped")
