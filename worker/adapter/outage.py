"""A broker backend's outages, counted and logged the same way for every broker.

The redis and amqp transports keep serving local clients while their broker
is away, buffer cross-worker frames in an :class:`~.buffer.OutageBuffer`,
and flush it when the broker returns.  :class:`Outages` is what they share
around that: how many outages and reconnects there were (``/status``), one
warning when an outage starts and one when it ends (with what the buffer
held and dropped), and one warning per outage when the buffer overflows,
not one per dropped frame.
"""

from __future__ import annotations

import logging
import time

from .buffer import OutageBuffer

__all__ = ["Outages"]


class Outages:
    def __init__(self, broker: str, buffer: OutageBuffer, log: logging.Logger) -> None:
        self.broker = broker  # "redis", "rabbitmq": for the log lines
        self.buffer = buffer
        self.log = log  # the transport's own logger
        self.outages = 0
        self.reconnects = 0
        self._started: float | None = None
        self._overflow_logged = False

    def began(self) -> None:
        self._started = time.monotonic()
        self._overflow_logged = False
        self.outages += 1
        self.log.warning("%s is unreachable: serving local clients, buffering the rest",
                         self.broker)

    def ended(self) -> None:
        """The broker is back (a no-op when no outage had begun: the first connect)."""
        if self._started is None:
            return
        self.reconnects += 1
        self.log.warning(
            "%s is back after %.1fs; %d frames buffered, %d dropped so far",
            self.broker, time.monotonic() - self._started, len(self.buffer),
            self.buffer.overflowed + self.buffer.expired,
        )
        self._started = None

    def buffer_frame(self, frame: bytes, to: str | None) -> None:
        """Queue a frame for the broker (dropping what aged out); warn once if it is full."""
        now = time.monotonic()
        self.buffer.expire(now)
        if not self.buffer.push(frame, to, now) and not self._overflow_logged:
            self._overflow_logged = True
            self.log.warning(
                "%s outage buffer full (%d bytes): dropping cross-worker messages",
                self.broker, self.buffer.bytes,
            )
