"""Every private name of python-socketio and python-engineio that siocluster touches.

We subclass or use public hooks wherever the libraries offer one.  Where
none does the job, the name is used only through this module, which says why
for each, so that a release that moves one fails in one place, by name:
:func:`check` runs before a worker loads the app (a clear boot failure
instead of an ``AttributeError`` deep in a request), and
``tests/worker/test_libcontract.py`` pins the names and their signatures.

The pins in pyproject (upper bounds) are the versions these were read from.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

__all__ = [
    "BEHAVIOURS",
    "PRIVATE_NAMES",
    "admin_stats_loop",
    "check",
    "driver_table",
    "install_json",
    "replace_driver_table",
    "server_hook",
    "set_server_hook",
]

# (class, attribute) -> why no public hook does it.
PRIVATE_NAMES: dict[tuple[str, str], str] = {
    ("engineio.AsyncServer", "_async"): (
        "the driver table's translate_request is the one place the environ of every "
        "request is built: the worker fills REMOTE_ADDR from the balancer's "
        "X-Forwarded-For and counts handshakes there"
    ),
    ("socketio.AsyncServer", "_trigger_event"): (
        "the only call site of every connect handler (function, namespace class or none): "
        "JWT auth runs there, per-socket limiter state is dropped on disconnect, a "
        "recovered connection skips the handler (skip_middlewares), and the disconnect "
        "reason (recoverable or not) is only seen there"
    ),
    ("socketio.AsyncServer", "_handle_event"): (
        "runs before python-socketio starts a task for an event handler, so an event "
        "over the rate limit costs no task"
    ),
    ("socketio.AsyncServer", "_handle_connect"): (
        "sees the CONNECT packet's auth payload, which fetch_sockets reports as Node's "
        "handshake.auth does, and connection-state recovery reads its pid and offset"
    ),
    ("socketio.async_admin.InstrumentedAsyncServer", "_emit_server_stats"): (
        "the Admin UI's server_stats loop, which python-socketio starts only at a worker's "
        "first Engine.IO connection; siocluster starts it with the worker so that every "
        "worker shows in the UI"
    ),
}

# Public names whose *behaviour* siocluster relies on beyond their documentation
# (checked by check(), pinned by tests/worker/test_libcontract.py):
BEHAVIOURS: dict[str, str] = {
    "engineio.AsyncSocket.close(wait, abort, reason)": (
        "worker.drain.close_session and the outbound cap close one session without "
        "waiting for its queue to drain"
    ),
    "engineio.AsyncSocket.queue / upgrading / upgraded / closed": (
        "a draining worker never closes a session mid-upgrade; the queue made by "
        "create_queue() is the one the socket sends from"
    ),
    "a None in AsyncSocket.queue ends its WebSocket writer": (
        "python-engineio's own sentinel: the drain closes the WebSocket so that "
        "socket.io-client, which ignores a CLOSE packet on a WebSocket, reconnects at once"
    ),
    "socketio.Packet(packet_type, data, namespace, id, binary, encoded_packet)": (
        "connection-state recovery subclasses the app's packet class to add the pid to "
        "the CONNECT reply (the documented serializer extension point)"
    ),
}

# Not private, but module state set by a documented argument: ``AsyncServer(json=...)``
# stores its module on these classes (socketio/base_server.py, engineio/base_server.py).
# The worker swaps in msgspec (worker/fastjson.py) only where the app kept the default.
JSON_HOLDERS = ("socketio.packet.Packet.json", "engineio.packet.Packet.json")

# The signatures read from the pinned releases (self excluded).
SIGNATURES: dict[str, tuple[str, ...]] = {
    "_trigger_event": ("event", "namespace", "args"),
    "_handle_event": ("eio_sid", "namespace", "id", "data"),
    "_handle_connect": ("eio_sid", "namespace", "data"),
}


def _engineio_packet() -> Any:
    import engineio.packet

    return engineio.packet.Packet


def check(sio: Any) -> list[str]:
    """What the running python-socketio/python-engineio no longer has; [] when all is there."""
    problems: list[str] = []
    from socketio.async_admin import InstrumentedAsyncServer

    loop = getattr(InstrumentedAsyncServer, "_emit_server_stats", None)
    if not inspect.iscoroutinefunction(loop):
        problems.append("socketio.async_admin.InstrumentedAsyncServer._emit_server_stats "
                        "is gone")
    for holder in (getattr(sio, "packet_class", None), _engineio_packet()):
        if not hasattr(holder, "json"):
            problems.append(f"{getattr(holder, '__qualname__', holder)}.json is gone")
    table = getattr(sio.eio, "_async", None)
    if not isinstance(table, dict) or "translate_request" not in table:
        problems.append("engineio.AsyncServer._async['translate_request'] is gone")
    for name, params in SIGNATURES.items():
        method = getattr(sio, name, None)
        if method is None:
            problems.append(f"socketio.AsyncServer.{name} is gone")
            continue
        unwrapped = inspect.unwrap(method)
        try:
            found = tuple(inspect.signature(unwrapped).parameters)
        except (TypeError, ValueError):
            continue
        if found != params:
            problems.append(f"socketio.AsyncServer.{name}{found} is not {name}{params}")
    problems += _check_behaviours(sio)
    return problems


def _params(func: Any) -> tuple[str, ...]:
    return tuple(p for p in inspect.signature(func).parameters if p != "self")


def _check_behaviours(sio: Any) -> list[str]:
    from engineio.async_socket import AsyncSocket

    problems: list[str] = []
    if _params(AsyncSocket.close) != ("wait", "abort", "reason"):
        problems.append(f"engineio AsyncSocket.close{_params(AsyncSocket.close)} is not "
                        "close('wait', 'abort', 'reason')")
    sock = AsyncSocket(sio.eio, "contract-check")
    for attr in ("queue", "upgrading", "upgraded", "closed"):
        if not hasattr(sock, attr):
            problems.append(f"engineio AsyncSocket has no {attr!r}")
    from socketio.packet import Packet

    packet_params = _params(Packet.__init__)
    if packet_params[:6] != ("packet_type", "data", "namespace", "id", "binary",
                             "encoded_packet"):
        problems.append(f"socketio.packet.Packet takes {packet_params}")
    return problems


def admin_stats_loop(admin: Any) -> Any:
    """The Admin UI's ``server_stats`` loop of ``admin`` (an InstrumentedAsyncServer)."""
    return admin._emit_server_stats


def install_json(sio: Any, module: Any) -> bool:
    """Make ``module`` the JSON module of ``sio``'s packets, unless the app chose its own.

    ``AsyncServer(json=X)`` sets the class attribute ``json`` of the server's
    packet class and of engineio's ``Packet``; both hold ``engineio.json`` when
    the app passed nothing.  Returns whether ``module`` was installed.
    """
    import engineio.json
    import engineio.packet

    packet_class = getattr(sio, "packet_class", None)
    holders = [packet_class, engineio.packet.Packet]
    if any(getattr(h, "json", None) is not engineio.json for h in holders):
        return False
    for holder in holders:
        holder.json = module
    return True


def driver_table(eio: Any) -> dict[str, Any]:
    table: dict[str, Any] = eio._async
    return table


def replace_driver_table(eio: Any, **entries: Any) -> None:
    """A per-instance copy with ``entries`` replaced: the table itself is module state."""
    eio._async = {**eio._async, **entries}


def server_hook(sio: Any, name: str) -> Callable[..., Any]:
    assert name in SIGNATURES, name
    hook: Callable[..., Any] = getattr(sio, name)
    return hook


def set_server_hook(sio: Any, name: str, hook: Callable[..., Any]) -> None:
    assert name in SIGNATURES, name
    setattr(sio, name, hook)
