"""The master's recovery desk: it holds the sessions and the packet log.

The master outlives every worker, so the state connection-state recovery
needs (see :mod:`worker.recovery.store`) lives here, and survives a SIGKILLed
worker and a rolling restart.  This module is the thin I/O shell around the
pure :class:`~worker.recovery.store.RecoveryStore`: it answers the control
messages of :mod:`worker.control` (``LogAppend`` numbered and sent to every
serving worker as one ``LogDeliver``; ``SessionState``/``SessionClosed`` kept;
``RestoreRequest`` decided), marks a dead worker's sessions disconnected, and
trims the log once a second.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any

from worker import control
from worker.config import RecoveryConfig
from worker.recovery.store import Entry, RecoveryStore

__all__ = ["RecoveryDesk", "worker_totals"]

Owner = tuple[int, int]
Writer = Callable[[bytes], None]


class RecoveryDesk:
    def __init__(self, config: RecoveryConfig) -> None:
        self.config = config
        self.store = RecoveryStore(
            config.max_disconnection_s, config.max_log_bytes, secrets.token_hex(4)
        )
        self._trimmer: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._trimmer = asyncio.create_task(self._trim_forever())

    async def close(self) -> None:
        if self._trimmer is not None:
            self._trimmer.cancel()

    async def _trim_forever(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.store.trim(time.monotonic())

    def _deliver(self, entry: Entry) -> control.LogDeliver:
        return control.LogDeliver(
            offset=self.store.offset(entry.seq), nsp=entry.nsp, rooms=list(entry.rooms),
            exclude=list(entry.exclude), payload=entry.payload,
        )

    def on_message(
        self, owner: Owner, msg: control.ControlMessage, reply: Writer,
        serving: Callable[[], Iterable[Writer]],
    ) -> bool:
        """Handle ``msg`` if it is a recovery message; False otherwise."""
        now = time.monotonic()
        store = self.store
        if isinstance(msg, control.LogAppend):
            entry = store.append(msg.nsp, tuple(msg.rooms), tuple(msg.exclude), msg.payload, now)
            frame = control.encode(self._deliver(entry))
            for write in serving():
                write(frame)
        elif isinstance(msg, control.SessionState):
            store.upsert(owner, msg.pid, msg.sid, msg.nsp, tuple(msg.rooms), msg.data)
        elif isinstance(msg, control.SessionClosed):
            store.closed(owner, msg.pid, recoverable=msg.recoverable, now=now)
        elif isinstance(msg, control.RestoreRequest):
            result = store.restore(msg.pid, msg.offset, msg.nsp, owner, now)
            if result.reason is not None or result.session is None:
                answer = control.RestoreReply(rid=msg.rid, pid=msg.pid,
                                              reason=str(result.reason))
            else:
                s = result.session
                answer = control.RestoreReply(
                    rid=msg.rid, pid=msg.pid, sid=s.sid, rooms=list(s.rooms), data=s.data,
                    missed=[self._deliver(e) for e in result.missed],
                )
            reply(control.encode(answer))
        else:
            return False
        return True

    def worker_gone(self, owner: Owner) -> None:
        self.store.owner_gone(owner, time.monotonic())

    def status(self, workers: Iterable[dict[str, int]] = ()) -> dict[str, Any]:
        out = self.store.status(time.monotonic())
        # Decided in the workers: refused by the app, timed out, sid still live there.
        # (Counted since each worker started: an exited worker's are gone.)
        not_recovered: dict[str, int] = dict(out["not_recovered"])  # type: ignore[call-overload]
        undone = 0
        for counters in workers:
            for key, value in counters.items():
                if key.startswith("not_recovered/") and value:
                    reason = key.partition("/")[2]
                    not_recovered[reason] = not_recovered.get(reason, 0) + value
                    if reason in ("refused", "still_connected"):
                        undone += value  # granted by the store, then not completed
        out["recovered"] = max(0, int(out["recovered"]) - undone)  # type: ignore[call-overload]
        out["not_recovered"] = not_recovered
        return out


def worker_totals(workers: Iterable[dict[str, int]]) -> dict[str, Any]:
    """The ``redis`` backend's figures: Redis holds the state, the workers count.

    Counters of workers that exited are gone with them (they count since start).
    """
    out: dict[str, Any] = {"recovered": 0, "replayed": 0, "not_recovered": {},
                           "appended": 0, "delivered_max": 0, "dropped": 0,
                           "redis_failures": 0, "degraded_workers": 0, "sessions": 0}
    not_recovered: dict[str, int] = out["not_recovered"]
    for counters in workers:
        for key, value in counters.items():
            if key.startswith("not_recovered/"):
                reason = key.partition("/")[2]
                not_recovered[reason] = not_recovered.get(reason, 0) + value
            elif key == "delivered":
                out["delivered_max"] = max(out["delivered_max"], value)
            elif key == "degraded":
                out["degraded_workers"] += value
            elif key in out and isinstance(out[key], int):
                out[key] += value
    return out
