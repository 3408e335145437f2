from __future__ import annotations

from typing import Any

from balancer.peer import PeerProtocol, PeerTransport


class _Transport:
    """Stands in for an event loop transport: records what is written."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )


class _Protocol:
    def __init__(self) -> None:
        self.transport: Any = None
        self.data: list[bytes] = []
        self.lost = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data.append(data)

    def eof_received(self) -> bool:
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


def test_only_the_peername_changes() -> None:
    real = _Transport()
    wrapped = PeerTransport(real, ("203.0.113.9", 4711))
    assert wrapped.get_extra_info("peername") == ("203.0.113.9", 4711)
    assert wrapped.get_extra_info("sockname") == ("127.0.0.1", 8000)
    assert wrapped.get_extra_info("nope", 1) == 1
    wrapped.write(b"x")
    wrapped.close()
    assert real.written == [b"x"] and real.closed and wrapped.is_closing()


def test_protocol_passes_everything_through() -> None:
    inner = _Protocol()
    protocol = PeerProtocol(inner, ("198.51.100.1", 1))
    real = _Transport()
    protocol.connection_made(real)  # type: ignore[arg-type]
    assert inner.transport.get_extra_info("peername") == ("198.51.100.1", 1)
    protocol.data_received(b"GET / HTTP/1.1\r\n")
    assert protocol.eof_received() is True
    protocol.connection_lost(None)
    assert inner.data == [b"GET / HTTP/1.1\r\n"] and inner.lost
