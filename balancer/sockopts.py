"""Socket options for client connections.  Pure: it only says which to set.

A peer that vanishes without a FIN or RST (a cable pulled, a NAT entry
dropped, a phone gone out of coverage) leaves a *half-open* connection:
nothing ever arrives, and nothing fails until we write.  Above TCP the
cluster bounds every wait on its own (header_timeout_s for heads,
idle_timeout_s between requests and for bodies, Engine.IO's ping timeout for
sessions), but a connection holding a long-poll or a WebSocket with nothing
to say is only noticed by the kernel.  Linux's defaults take over two hours
for that (keepalive after 7,200 s idle) and about fifteen minutes to give up
on data that is never acknowledged.

With ``[limits] tcp_keepalive_s`` = *s*, a connection idle for *s* seconds is
probed every *s*/4 seconds and dropped after 4 unanswered probes, so a dead
peer is found within about 2*s*; unacknowledged data is given up on after
2*s* (``TCP_USER_TIMEOUT``).  The options are set once, on the master's
listener: Linux gives each accepted socket the listener's options, and a
socket handed off to a worker keeps them.
"""

from __future__ import annotations

import socket

__all__ = ["keepalive_options"]

_PROBES = 4


def keepalive_options(seconds: float) -> list[tuple[int, int, int]]:
    """``(level, option, value)`` for setsockopt; empty leaves the kernel's defaults."""
    if seconds <= 0:
        return []
    idle = max(1, round(seconds))
    interval = max(1, round(seconds / _PROBES))
    options = [
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle),
        (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval),
        (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, _PROBES),
    ]
    if hasattr(socket, "TCP_USER_TIMEOUT"):
        options.append((socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 2 * idle * 1000))
    return options
