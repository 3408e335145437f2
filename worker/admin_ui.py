"""The Socket.IO Admin UI across every worker (``[admin] socketio_admin_ui``).

python-socketio's ``sio.instrument()`` (``socketio.async_admin``) serves the
official Admin UI on the ``/admin`` namespace.  It reports through
``sio.emit(..., namespace="/admin")``, which the cluster adapter delivers on
every worker, so an Admin UI connected to any one worker hears them all.  It
was written for one process, though; :class:`ClusterAdmin` subclasses it
where that shows:

* **Server names.**  Without ``server_id`` it names the server after the
  host, so the workers of one host would merge into one row: each worker is
  ``<host>/worker-<slot>/<pid>``.
* **Stats from the start.**  It starts its ``server_stats`` loop at the first
  Engine.IO connection *to that worker*; a worker no client reached yet would
  be missing from the UI.  The loop starts with the worker.
* **Every socket of the cluster.**  On an admin's connect it sends
  ``all_sockets`` from the local manager only; here each worker adds its own
  (``server_side_emit_with_ack``, the adapter's request/reply), so the UI
  lists every socket with its rooms at once, not only as pings come in.
* **Actions on any worker.**  join/leave/disconnect from the UI act through
  the cluster manager (``sockets_join``, ``sockets_leave``,
  ``disconnect_sockets``), so they reach sockets on other workers too.

Authentication: the UI's login (``{"username": ..., "password": ...}``) must
carry the configured password; the username is not checked.  The admin
namespace is exempt from the JWT guard (:mod:`worker.guards`), since the UI
cannot send a JWT; its password is its guard.
"""

from __future__ import annotations

import hmac
import logging
import os
import socket
from typing import Any

from socketio.async_admin import InstrumentedAsyncServer
from socketio.exceptions import ConnectionRefusedError as SioConnectionRefused

from .adapter.exceptions import AdapterError, RequestTimeout
from .libcontract import admin_stats_loop

__all__ = ["ADMIN_NAMESPACE", "SOCKETS_EVENT", "ClusterAdmin", "password_matches"]

log = logging.getLogger("siocluster.worker.admin_ui")

ADMIN_NAMESPACE = "/admin"
SOCKETS_EVENT = "siocluster:admin-ui-sockets"


def password_matches(auth: Any, secret: str) -> bool:
    """Pure: the UI's login payload carries ``secret`` as its password."""
    if not secret or not isinstance(auth, dict):
        return False
    given = auth.get("password")
    return isinstance(given, str) and hmac.compare_digest(given.encode(), secret.encode())


class ClusterAdmin(InstrumentedAsyncServer):  # type: ignore[misc]
    def __init__(self, sio: Any, *, secret: str, slot: int) -> None:
        if not secret:
            raise ValueError("the Admin UI needs a password")
        super().__init__(
            sio, auth=lambda auth: password_matches(auth, secret), namespace=ADMIN_NAMESPACE,
            server_id=f"{socket.gethostname()}/worker-{slot}/{os.getpid()}",
        )
        on_server_side = getattr(sio.manager, "on_server_side", None)
        if on_server_side is not None:
            on_server_side(SOCKETS_EVENT, self.local_sockets)
        self.stop_stats_event = sio.eio.create_event()
        self.stats_task = sio.start_background_task(admin_stats_loop(self))

    async def close(self) -> None:
        if self.stats_task is not None:
            self.stats_task.cancel()
            self.stats_task = None

    def local_sockets(self) -> list[dict[str, Any]]:
        """This worker's sockets, as the Admin UI shows them."""
        manager = self.sio.manager
        sockets = []
        for nsp in list(manager.get_namespaces()):
            for sid, eio_sid in list(manager.get_participants(nsp, None)):
                try:
                    sockets.append(self.serialize_socket(sid, nsp, eio_sid))
                except KeyError:
                    continue  # its Engine.IO session closed meanwhile
        return sockets

    # The Admin UI's handlers (registered by instrument(); these override them)

    async def admin_connect(self, sid: str, environ: Any, client_auth: Any) -> None:
        if not self.auth(client_auth):
            log.info("admin UI connection %s refused: wrong or missing password", sid)
            raise SioConnectionRefused("authentication failed")
        self.sio.start_background_task(self._configure, sid)

    async def _configure(self, sid: str) -> None:
        await self.sio.sleep(0.1)
        features = ["AGGREGATED_EVENTS"]
        if not self.read_only:
            features += ["EMIT", "JOIN", "LEAVE", "DISCONNECT", "MJOIN", "MLEAVE", "MDISCONNECT"]
        if self.mode == "development":
            features.append("ALL_EVENTS")
        await self.sio.emit("config", {"supportedFeatures": features}, to=sid,
                            namespace=self.admin_namespace)
        if self.mode != "development":
            return
        sockets = self.local_sockets()
        ask = getattr(self.sio.manager, "server_side_emit_with_ack", None)
        if ask is not None:
            try:
                answers = await ask(SOCKETS_EVENT)
            except RequestTimeout as exc:
                answers = exc.results  # the workers that answered in time
            except AdapterError as exc:  # the backend is down: this worker's sockets only
                log.warning("admin UI: other workers' sockets unavailable: %s", exc)
                answers = []
            for answer in answers:
                if isinstance(answer, list):
                    sockets.extend(answer)
        await self.sio.emit("all_sockets", sockets, to=sid, namespace=self.admin_namespace)

    async def admin_enter_room(self, _sid: str, namespace: str, room: Any,
                               room_filter: Any = None) -> None:
        await self._cluster("sockets_join", room, room=room_filter, namespace=namespace)

    async def admin_leave_room(self, _sid: str, namespace: str, room: Any,
                               room_filter: Any = None) -> None:
        await self._cluster("sockets_leave", room, room=room_filter, namespace=namespace)

    async def admin_disconnect(self, _sid: str, namespace: str, close: Any,
                               room_filter: Any = None) -> None:
        await self._cluster("disconnect_sockets", room=room_filter, namespace=namespace,
                            close=bool(close))

    async def _cluster(self, method: str, *args: Any, **kwargs: Any) -> None:
        action = getattr(self.sio.manager, method, None)
        if action is None:  # no cluster manager (adapter backend "none"): this worker only
            fallback = {"sockets_join": super().admin_enter_room,
                        "sockets_leave": super().admin_leave_room,
                        "disconnect_sockets": super().admin_disconnect}[method]
            room_filter = kwargs.get("room")
            namespace = kwargs["namespace"]
            if method == "disconnect_sockets":
                await fallback(None, namespace, kwargs.get("close"), room_filter)
            else:
                await fallback(None, namespace, args[0], room_filter)
            return
        await action(*args, **kwargs)
