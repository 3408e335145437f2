"""``python -m bench --soak``: session churn for a long while; nothing may grow.

A 2-worker cluster of the test echo app takes ``--soak-sessions`` sessions
(100,000 by default) in rounds, from the churn clients of ``tests/churn.py``:
polling then WebSocket upgrade, polling only (some clients vanish without a
word), and several sessions per kept-alive connection; every connection is
closed by its client.  After each round the open descriptors and RSS of the
master and of each worker are sampled, with the CLOSE-WAIT sockets on the
public port.

Verdict, after warm-up (the first third of the rounds, long enough for the
sessions of vanished clients to time out on Engine.IO's ping):

* master and workers: descriptors within ``FD_SLACK`` of the end of warm-up;
* master RSS grew less than ``MASTER_RSS_SLACK``; each worker's less than
  ``WORKER_RSS_SLACK`` (the Python heap of a busy worker breathes);
* no CLOSE-WAIT socket left on the public port after the last round.

Exit status 0 when flat, 1 when not.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.churn import churn, close_wait, process_fds, rss_bytes
from tests.cluster import Cluster, start_cluster

__all__ = ["soak"]

FD_SLACK = 20
MASTER_RSS_SLACK = 4 * 1024 * 1024
WORKER_RSS_SLACK = 16 * 1024 * 1024


@dataclass
class Sample:
    sessions: int
    elapsed_s: float
    failures: int
    master_fds: int
    master_rss: int
    workers: list[tuple[int, int, int]]  # (slot, fds, rss)
    close_wait: int


def _sample(cluster: Cluster, sessions: int, elapsed: float, failures: int) -> Sample:
    workers = []
    for w in sorted(cluster.status()["workers"], key=lambda w: w["slot"]):
        if w["pid"]:
            workers.append((w["slot"], process_fds(w["pid"]), rss_bytes(w["pid"])))
    pid = cluster.proc.pid
    return Sample(sessions, elapsed, failures, process_fds(pid), rss_bytes(pid), workers,
                  close_wait(cluster.port))


def _row(s: Sample) -> str:
    workers = "  ".join(f"w{slot} {fds:>4} fds {rss / 1048576:6.1f} MB"
                        for slot, fds, rss in s.workers)
    return (f"{s.sessions:>8,} {s.elapsed_s:7.0f}s {s.failures:>5}  master {s.master_fds:>4} fds "
            f"{s.master_rss / 1048576:6.1f} MB  {workers}  close-wait {s.close_wait}")


def verdict(samples: list[Sample]) -> list[str]:
    """Pure: what is not flat after warm-up (the first third of the samples)."""
    problems: list[str] = []
    base = samples[max(0, len(samples) // 3 - 1)]
    after = samples[len(samples) // 3:]
    if any(s.master_fds > base.master_fds + FD_SLACK for s in after):
        problems.append(f"master fds grew: {base.master_fds} -> "
                        f"{max(s.master_fds for s in after)}")
    growth = max(s.master_rss for s in after) - base.master_rss
    if growth > MASTER_RSS_SLACK:
        problems.append(f"master RSS grew {growth / 1048576:.1f} MB after warm-up")
    for i, (slot, fds0, rss0) in enumerate(base.workers):
        seen = [s.workers[i] for s in after if len(s.workers) > i and s.workers[i][0] == slot]
        if any(fds > fds0 + FD_SLACK for _, fds, _ in seen):
            problems.append(f"worker {slot} fds grew: {fds0} -> {max(f for _, f, _ in seen)}")
        worker_growth = max((rss for _, _, rss in seen), default=rss0) - rss0
        if worker_growth > WORKER_RSS_SLACK:
            problems.append(f"worker {slot} RSS grew {worker_growth / 1048576:.1f} MB after "
                            "warm-up")
    if samples[-1].close_wait:
        problems.append(f"{samples[-1].close_wait} sockets in CLOSE-WAIT at the end")
    if any(s.failures for s in samples):
        problems.append(f"{sum(s.failures for s in samples)} sessions failed")
    return problems


def soak(sessions: int = 100_000, rounds: int = 20, *, out: Path) -> int:
    per_round = max(100, sessions // rounds)
    out.mkdir(parents=True, exist_ok=True)
    print(f"soak: {per_round * rounds:,} sessions in {rounds} rounds through a 2-worker "
          "cluster (churn clients: polling->upgrade, polling, vanishing, shared keep-alive)",
          flush=True)
    with start_cluster(workers=2, tmp_path=out) as cluster:
        samples = [_sample(cluster, 0, 0.0, 0)]
        print(_row(samples[0]), flush=True)
        started = time.monotonic()
        done = 0
        for _ in range(rounds):
            result = asyncio.run(churn(cluster.port, per_round))
            done += result.sessions
            time.sleep(1.0)
            samples.append(_sample(cluster, done, time.monotonic() - started, result.failures))
            print(_row(samples[-1]), flush=True)
    problems = verdict(samples[1:])
    if problems:
        print("NOT FLAT: " + "; ".join(problems))
        return 1
    rate = done / max(samples[-1].elapsed_s, 1e-9)
    print(f"flat after warm-up: {done:,} sessions at {rate:,.0f}/s; fds within {FD_SLACK}, "
          f"master RSS within {MASTER_RSS_SLACK >> 20} MB, workers within "
          f"{WORKER_RSS_SLACK >> 20} MB")
    return 0


if __name__ == "__main__":
    sys.exit(soak(out=Path("bench/results")))
