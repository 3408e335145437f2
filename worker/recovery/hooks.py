"""Where connection-state recovery plugs into python-socketio.

:func:`install_hooks` wires a :class:`~.agent.RecoveryAgent` into one server;
the decisions stay in the agent, this module only patches:

* the app's packet class is replaced by a subclass (:func:`packet_class`, the
  documented ``serializer`` extension point) that adds the session's ``pid``
  to the CONNECT reply;
* ``_handle_connect`` (a private hook listed in :mod:`worker.libcontract`) lets
  the agent look at a CONNECT first (:meth:`~.agent.RecoveryAgent.before_connect`:
  ask the master to restore it, or mark a client that gets no offsets) and
  clean up after it (:meth:`~.agent.RecoveryAgent.after_connect`);
* ``_trigger_event`` (private, listed there too) skips the connect handler of
  a recovered socket when ``skip_middlewares`` and records why a socket was
  disconnected (:meth:`~.agent.RecoveryAgent.skips_event`);
* ``save_session`` writes the session through
  (:meth:`~.agent.RecoveryAgent.session_saved`).

Each patch is marked, so installing twice patches once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..libcontract import server_hook, set_server_hook

if TYPE_CHECKING:
    from .agent import RecoveryAgent

__all__ = ["install_hooks", "packet_class"]

_MARK = "_siocluster_recovery"


def install_hooks(sio: Any, agent: RecoveryAgent) -> None:
    sio.packet_class = packet_class(sio.packet_class, agent.pid_for)
    original_connect = server_hook(sio, "_handle_connect")
    if not getattr(original_connect, _MARK, False):

        async def handle_connect(eio_sid: str, namespace: str | None, data: Any) -> Any:
            nsp = namespace or "/"
            await agent.before_connect(eio_sid, nsp, data)
            try:
                return await original_connect(eio_sid, namespace, data)
            finally:
                agent.after_connect(nsp, eio_sid)

        setattr(handle_connect, _MARK, True)
        set_server_hook(sio, "_handle_connect", handle_connect)
    original_trigger = server_hook(sio, "_trigger_event")
    if not getattr(original_trigger, _MARK, False):

        async def trigger_event(event: str, namespace: str, *args: Any) -> Any:
            if agent.skips_event(event, namespace or "/", args):
                return True  # Node's skipMiddlewares: the handler is not run again
            return await original_trigger(event, namespace, *args)

        setattr(trigger_event, _MARK, True)
        set_server_hook(sio, "_trigger_event", trigger_event)
    original_save = sio.save_session

    async def save_session(sid: str, session: Any, namespace: str | None = None) -> None:
        await original_save(sid, session, namespace=namespace)
        agent.session_saved(namespace or "/", sid, session)

    sio.save_session = save_session


def packet_class(base: type[Any], pid_for: Callable[[str, str], str | None]) -> type[Any]:
    """The app's packet class, adding ``pid`` to the CONNECT reply of a known session."""
    from socketio import packet as sio_packet

    if getattr(base, _MARK, False):
        return base
    connect = sio_packet.CONNECT

    class RecoveryPacket(base):  # type: ignore[misc]
        def __init__(self, packet_type: int = sio_packet.EVENT, data: Any = None,
                     namespace: str | None = None, id: Any = None, binary: Any = None,
                     encoded_packet: Any = None) -> None:
            if packet_type == connect and isinstance(data, dict) and "sid" in data:
                pid = pid_for(namespace or "/", data["sid"])
                if pid is not None:
                    data = {**data, "pid": pid}
            super().__init__(packet_type, data, namespace=namespace, id=id, binary=binary,
                             encoded_packet=encoded_packet)

    setattr(RecoveryPacket, _MARK, True)
    RecoveryPacket.__name__ = f"Recovery{base.__name__}"
    return RecoveryPacket
