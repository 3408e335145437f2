"""forwarding: what a request costs when it lands on a host that does not own its session.

Two siocluster hosts (one worker each, redis adapter, several-host mode) on
this machine.  Every client makes its session on host A, then runs the echo
closed loop either through A ("owner") or through B ("forwarded": B's
balancer forwards each poll over keep-alive, or relays the WebSocket, to A).
Same clients, same app; rounds alternate.  The ratio forwarded/owner is the
price of the hop.  ``python -m bench.forwarding`` runs the same measurement
on its own.
"""

from __future__ import annotations

import asyncio
import contextlib

from ..forwarding import host, one_run
from ..lab import Lab
from ..model import Row, Run, Section, merge_rounds, round_order

__all__ = ["forwarding"]


def forwarding(lab: Lab) -> Section:
    s = lab.settings
    section = Section("forwarding")
    with contextlib.ExitStack() as stack:
        a = stack.enter_context(host("ba", lab.redis_url(), lab.log_dir))
        b = stack.enter_context(host("bb", lab.redis_url(), lab.log_dir))
        for transport, clients, key in (("websocket", s.ws_clients, "ws_acks_per_s"),
                                        ("polling", s.polling_clients, "polling_acks_per_s")):
            runs: dict[str, list[Run]] = {"forwarded": [], "owner": []}
            for r in range(s.rounds):
                for index in round_order(2, r):
                    label, via = (("forwarded", b), ("owner", a))[index]
                    rate = asyncio.run(one_run(transport, a, via, clients, s.duration_s))
                    runs[label].append(Run(label, metrics={key: rate}))
            for label in ("forwarded", "owner"):
                merged = merge_rounds(runs[label])
                existing = section.run(label)
                if existing is None:
                    section.runs.append(merged)
                else:
                    existing.metrics.update(merged.metrics)
                    existing.spread.update(merged.spread)
    section.rows += [Row("ws-echo acks/s", "ws_acks_per_s", "forwarded", "owner"),
                     Row("polling-echo acks/s", "polling_acks_per_s", "forwarded", "owner")]
    section.notes.append(
        f"sessions made on host A; echo through host B (forwarded) vs host A (owner); "
        f"{s.ws_clients} ws / {s.polling_clients} polling clients, one generator process, "
        f"{s.duration_s:g}s x {s.rounds} rounds")
    return section
