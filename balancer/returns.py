"""Polling connections the workers give back to the master.

A worker's gate (:mod:`worker.gate`) passes a connection back over its
``SOCK_SEQPACKET`` handoff socket (the one the master hands sockets down) with
the first request on it that is not its own (:mod:`balancer.stickiness`).
:class:`ReturnDesk` reads every worker's socket from the event loop and gives
each connection to a new protocol from ``protocol`` (the front door's: a
:class:`~balancer.front.FrontProtocol`, told how many times the connection
came back), fed the requests it carried.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

from .handoff import RETURNED, decode_passed
from .peer import Peer
from .stats import BalancerStats

__all__ = ["ProtocolFactory", "ReturnDesk"]

log = logging.getLogger("siocluster.balancer")

# (the client a PROXY header named, how many times workers gave it back)
ProtocolFactory = Callable[[Peer | None, int], asyncio.Protocol]
# A datagram: the requests a worker read off the connection and did not answer;
# at most one whole request (max_message_bytes) and its head, plus pipelined ones.
_MAX_DATAGRAM = 4 * 1024 * 1024


class ReturnDesk:
    def __init__(self, stats: BalancerStats) -> None:
        self._stats = stats
        self.protocol: ProtocolFactory | None = None  # set by the front door
        self._watched: set[int] = set()
        self._adopting: set[asyncio.Task[None]] = set()

    def watch(self, channel: socket.socket) -> None:
        """Read what the worker at the other end of ``channel`` gives back."""
        fd = channel.fileno()
        self._watched.add(fd)
        asyncio.get_running_loop().add_reader(fd, self._readable, channel)

    def unwatch(self, channel: socket.socket) -> None:
        fd = channel.fileno()
        if fd in self._watched:
            self._watched.discard(fd)
            asyncio.get_running_loop().remove_reader(fd)

    def _readable(self, channel: socket.socket) -> None:
        while True:
            try:
                payload, fds, _flags, _addr = socket.recv_fds(channel, _MAX_DATAGRAM, 4)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.unwatch(channel)
                return
            if not payload and not fds:
                self.unwatch(channel)  # the worker is gone
                return
            passed = decode_passed(payload)
            socks = [socket.socket(fileno=fd) for fd in fds]
            if passed is None or passed.kind != RETURNED or len(socks) != 1 \
                    or self.protocol is None:
                log.warning("ignored a malformed connection return from a worker")
                for sock in socks:
                    sock.close()
                continue
            self._stats.polling_returns += 1
            socks[0].setblocking(False)
            task = asyncio.get_running_loop().create_task(
                self._adopt(socks[0], passed.data, passed.peer, passed.returns))
            self._adopting.add(task)
            task.add_done_callback(self._adopting.discard)

    async def _adopt(self, sock: socket.socket, data: bytes, peer: Peer | None,
                     returns: int) -> None:
        factory = self.protocol
        assert factory is not None
        try:
            _, protocol = await asyncio.get_running_loop().connect_accepted_socket(
                lambda: factory(peer, returns), sock)
        except OSError:
            sock.close()
            return
        # Even empty (an idle connection a stopping worker gave back): the
        # protocol then times it as idle, not as a head being read.
        protocol.data_received(data)
