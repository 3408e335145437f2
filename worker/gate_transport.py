"""What the gate (:mod:`worker.gate`) puts between the client's socket and the app's protocol.

* :class:`InnerTransport`: the transport the app's HTTP protocol (aiohttp's or
  uvicorn's) writes to.  Its writes go to the client through the gate; it
  reads nothing (the gate feeds it whole requests) and reports no socket.
  Its peer is the client's address as a string, not a (host, port) pair:
  aiohttp takes a string as ``request.remote`` as it is, and uvicorn takes
  none, so an ASGI app believes the X-Forwarded-For the gate set, as it
  believes the master's.
* :class:`ResponseEnd`: httptools' response parser's callback, so the gate
  knows where each answer ends and whether it keeps the connection.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import httptools

__all__ = ["GateSide", "InnerTransport", "ResponseEnd"]


class GateSide(Protocol):
    def inner_write(self, data: bytes) -> None: ...

    def inner_closed(self, transport: InnerTransport) -> None: ...

    def gone(self) -> bool: ...

    def write_buffer_size(self) -> int: ...


class ResponseEnd:
    """httptools' response parser calls this at the end of an answer."""

    __slots__ = ("done", "keep_alive", "parser")

    def __init__(self) -> None:
        self.done = False
        self.keep_alive = False
        self.parser: httptools.HttpResponseParser | None = None

    def start(self) -> httptools.HttpResponseParser:
        """The parser for the next answer (one per connection: llhttp takes the
        answers of a kept-alive connection in turn)."""
        self.done = self.keep_alive = False
        if self.parser is None:
            self.parser = httptools.HttpResponseParser(self)
        return self.parser

    def on_message_complete(self) -> None:
        self.done = True
        # (llhttp forgets it once the message is over)
        self.keep_alive = self.parser is not None and self.parser.should_keep_alive()


class InnerTransport(asyncio.Transport):
    """What the app's HTTP protocol writes to: the client's socket, through the gate.

    It reads nothing (the gate feeds it whole requests) and reports no socket.
    ``peer`` is the connection's client (a string: see the module's
    docstring); behind a trusted proxy, the client of each request is in the
    X-Forwarded-For the gate sets."""

    def __init__(self, gate: GateSide) -> None:
        super().__init__()
        self._gate = gate
        self._closing = False
        self._protocol: Any = None
        self.peer = ""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._closing:
            self._gate.inner_write(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def is_closing(self) -> bool:
        return self._closing or self._gate.gone()

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._gate.inner_closed(self)

    def abort(self) -> None:
        self.close()

    def detach(self) -> None:
        """The gate let go of the app's protocol: it writes nothing more."""
        self._closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self.peer
        if name == "sockname":
            return ""
        return default

    def get_write_buffer_size(self) -> int:
        return self._gate.write_buffer_size()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        pass  # the gate feeds whole requests, one at a time

    def resume_reading(self) -> None:
        pass

    def is_reading(self) -> bool:
        return not self._closing

    def can_write_eof(self) -> bool:
        return False

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol  # type: ignore[no-any-return]
