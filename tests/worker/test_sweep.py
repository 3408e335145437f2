from __future__ import annotations

from types import SimpleNamespace

import engineio

from worker.sweep import drop_closed


def test_only_closed_sockets_go() -> None:
    sockets = {"a": SimpleNamespace(closed=True), "b": SimpleNamespace(closed=False),
               "c": SimpleNamespace(closed=True)}
    assert drop_closed(sockets) == 2
    assert list(sockets) == ["b"]
    assert drop_closed(sockets) == 0


def test_python_engineio_sockets_have_the_closed_flag() -> None:
    """The contract drop_closed relies on: a fresh AsyncSocket says closed=False."""
    server = engineio.AsyncServer()
    sock = engineio.async_socket.AsyncSocket(server, "sid")
    assert sock.closed is False
    assert isinstance(server.sockets, dict)
