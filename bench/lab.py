"""The bench's workbench: settings, the targets to start, and the generator to run.

Workloads ask the :class:`Lab` for a fresh target per run (so one workload's
leftovers, sessions or a grown heap, never skew the next) and for one shared
redis-server, started on first use and stopped by :meth:`Lab.close`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any

from . import peers, targets
from .limits import raise_nofile
from .loadgen import ShardFn, Window, run_shards
from .model import Run, merge_rounds, round_order
from .redisproc import redis_server
from .settings import Settings

__all__ = ["Lab"]


def _start_all(stack: contextlib.ExitStack,
               starters: Sequence[Callable[[], AbstractContextManager[targets.Target]]]
               ) -> list[targets.Target]:
    """Start the targets side by side (a cluster takes seconds to boot); stop them on exit."""
    managers = [start() for start in starters]
    with ThreadPoolExecutor(len(managers)) as pool:
        futures = [pool.submit(manager.__enter__) for manager in managers]
    started: list[targets.Target] = []
    failure: BaseException | None = None
    for manager, future in zip(managers, futures, strict=True):
        error = future.exception()
        if error is None:
            stack.push(manager.__exit__)
            started.append(future.result())
        elif failure is None:
            failure = error
    if failure is not None:
        raise failure
    return started


class Lab:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Before any server or generator starts: they inherit it.
        self.nofile = raise_nofile()
        self.log_dir = settings.out_dir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._stack = contextlib.ExitStack()
        self._redis_url: str | None = None

    def redis_url(self) -> str:
        if self._redis_url is None:
            self._redis_url = self._stack.enter_context(redis_server())
        return self._redis_url

    def cluster(self, adapter: str | None = None, *, env: dict[str, str] | None = None,
                label: str | None = None) -> AbstractContextManager[targets.Target]:
        adapter = adapter or self.settings.cluster_adapter
        redis_url = self.redis_url() if adapter == "redis" else None
        if self.settings.cluster_polling_handoff is not None:
            env = {"SIOCLUSTER_BALANCER_POLLING_HANDOFF":
                   "true" if self.settings.cluster_polling_handoff == "on" else "false",
                   **(env or {})}
        return targets.cluster(self.settings.workers, adapter=adapter, log_dir=self.log_dir,
                               redis_url=redis_url, websocket=self.settings.cluster_websocket,
                               app=self.settings.app, env=env, label=label)

    def standalone(self, *, redis: bool = False) -> AbstractContextManager[targets.Target]:
        return targets.standalone(self.settings.workers, log_dir=self.log_dir,
                                  redis_url=self.redis_url() if redis else None,
                                  app=self.settings.app)

    def haproxy(self) -> AbstractContextManager[targets.Target]:
        """HAProxy (sticky) + N python-socketio servers + AsyncRedisManager."""
        return peers.haproxy_stack(self.settings.workers, log_dir=self.log_dir,
                                   redis_url=self.redis_url(), app=self.settings.app)

    def node(self) -> AbstractContextManager[targets.Target]:
        """Node's socket.io cluster with N workers."""
        return peers.node_cluster(self.settings.workers, log_dir=self.log_dir)

    def peers(self) -> list[Callable[[], AbstractContextManager[targets.Target]]]:
        """The peer systems' starters with ``--peers`` (else none), in table order."""
        return [self.haproxy, self.node] if self.settings.peers else []

    def serving(self, app: str) -> Lab:
        """This lab with another app (``bench_asgi``); the redis-server stays shared."""
        other = copy.copy(self)
        other.settings = dataclasses.replace(self.settings, app=app)
        return other

    def split(self, total: int) -> Iterator[tuple[int, int]]:
        """``(first index, count)`` of each generator process's share of ``total`` clients."""
        shards = max(1, min(self.settings.shards, total))
        first = 0
        for i in range(shards):
            count = total // shards + (1 if i < total % shards else 0)
            yield first, count
            first += count

    def measure(self, target: targets.Target, fn: ShardFn, params: Sequence[Any], *,
                setup_timeout_s: float, run_timeout_s: float,
                during: Callable[[], None] | None = None) -> tuple[list[dict[str, Any]], Window]:
        return run_shards(fn, params, server_pids=target.pids,
                          setup_timeout_s=setup_timeout_s, run_timeout_s=run_timeout_s,
                          during=during)

    def compare(self, starters: Sequence[Callable[[], AbstractContextManager[targets.Target]]],
                measure: Callable[[targets.Target], Run], *, rounds: int | None = None
                ) -> list[Run]:
        """Measure every target ``rounds`` times, interleaved, and merge each one's rounds.

        The targets run side by side (an idle one costs next to nothing) and
        the order flips every round (A B C, C B A, ...: :func:`round_order`),
        so a background load that comes and goes on a shared machine weighs on
        every side alike.
        """
        rounds = rounds or self.settings.rounds
        with contextlib.ExitStack() as stack:
            started = _start_all(stack, starters)
            runs: list[list[Run]] = [[] for _ in started]
            for r in range(rounds):
                for index in round_order(len(started), r):
                    runs[index].append(measure(started[index]))
        return [merge_rounds(target_runs) for target_runs in runs]

    def close(self) -> None:
        self._stack.close()
