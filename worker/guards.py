"""Per-connection and per-event guards installed in every worker.

:func:`install_guards` is called once per worker, before it listens, and
returns a :class:`Guards` whose :meth:`Guards.status` is a flat
``dict[str, int]`` of counters for the heartbeat and ``/metrics``.

What it installs, each only when configured:

* ``[socketio] cors_allowed_origins`` becomes ``sio.eio.cors_allowed_origins``
  (``["*"]`` -> ``"*"``, any origin).  An empty list leaves the app's own
  setting, which by python-engineio's default (None) means same-origin only:
  a handshake whose Origin is not ``scheme://Host`` is answered 400.
* ``[auth] enabled``: every namespace connection must carry a JWT
  (:mod:`worker.auth`).  A refusal reaches the client as ``connect_error``
  with ``{"message": "invalid token: expired", "data": {"reason": "expired"}}``;
  on success the claims are put where the app finds them (see
  :mod:`worker.auth`) and the app's connect handler runs with its usual
  arguments.
* ``[limits] event_rate_per_socket``: a token bucket per Socket.IO socket
  (:mod:`worker.ratelimit`, burst twice the rate).  An event over the limit
  never reaches a handler.  ``event_rate_action = "drop"`` drops it and emits
  ``"rate_limited"`` to the socket, ``{"event", "limit_per_s", "burst", "action"}``, at
  most once a second; ``"disconnect"`` emits the same and disconnects the
  socket (server-side, so the client does not reconnect by itself).

python-socketio has no public hook in front of the connect handler or of event
dispatch, so two private methods are wrapped, on this instance only:
``_trigger_event`` (connect: authenticate first; disconnect: forget the bucket)
and ``_handle_event`` (rate limit before a handler task is even started).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from socketio.exceptions import ConnectionRefusedError as SioConnectionRefused

from .config import WorkerConfig
from .exceptions import WorkerError
from .libcontract import server_hook, set_server_hook
from .ratelimit import EventRateLimiter, Verdict
from .typed import typed_stats

if TYPE_CHECKING:
    from .auth import TokenVerifier

__all__ = ["RATE_LIMITED_EVENT", "Guards", "install_guards"]

log = logging.getLogger("siocluster.worker.guards")

RATE_LIMITED_EVENT = "rate_limited"
_MARK = "_siocluster_guard"


class Guards:
    """The guards of one Socket.IO server, and their counters."""

    def __init__(
        self, sio: Any, config: WorkerConfig, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.sio = sio
        self.config = config
        self.clock = clock
        self.verifier: TokenVerifier | None = None
        self.limiter: EventRateLimiter | None = None
        self.counters: dict[str, int] = {}
        # The Admin UI's namespace has its own password and cannot send a JWT.
        self.auth_exempt = frozenset({"/admin"}) if config.socketio_admin_ui else frozenset()
        # sid -> claims, only between python-socketio's two connect-handler
        # attempts (with and without ``auth``); see _connect.
        self._retry_claims: dict[str, dict[str, Any]] = {}
        if config.auth.enabled:
            # PyJWT and cryptography are needed only with [auth].
            try:
                from .auth import REASONS, TokenVerifier
            except ImportError as exc:
                raise WorkerError(
                    f"auth.enabled needs PyJWT and cryptography ({exc}); "
                    "pip install 'PyJWT[crypto]>=2.8'"
                ) from None
            self.verifier = TokenVerifier.from_config(config.auth)
            self.counters.update({"auth_ok": 0, "auth_failed": 0})
            self.counters.update({f"auth_failed_{reason}": 0 for reason in REASONS})
        rate = config.limits.event_rate_per_socket
        if rate > 0:
            self.limiter = EventRateLimiter(rate)
            self.counters.update(
                {"rate_limited": 0, "rate_limited_dropped": 0, "rate_limited_disconnects": 0}
            )

    def status(self) -> dict[str, int]:
        """Counters since the worker started, flat, for heartbeats and metrics."""
        return {**self.counters, **typed_stats(self.sio)}

    # Installation

    def install(self) -> None:
        self._apply_cors()
        if self.verifier is not None or self.limiter is not None:
            self._wrap_trigger_event()
        if self.limiter is not None:
            self._wrap_handle_event()

    def _apply_cors(self) -> None:
        origins = self.config.socketio.cors_allowed_origins
        eio = self.sio.eio
        if not origins:
            if eio.cors_allowed_origins is not None:
                log.info(
                    "[socketio] cors_allowed_origins is empty: keeping the app's own "
                    "cors_allowed_origins=%r",
                    eio.cors_allowed_origins,
                )
            return
        eio.cors_allowed_origins = "*" if "*" in origins else list(origins)

    def _wrap_trigger_event(self) -> None:
        original = server_hook(self.sio, "_trigger_event")
        if getattr(original, _MARK, False):
            return

        async def trigger_event(event: str, namespace: str, *args: Any) -> Any:
            if (event == "connect" and self.verifier is not None
                    and namespace not in self.auth_exempt):
                return await self._connect(original, namespace, args)
            if event == "disconnect" and self.limiter is not None and args:
                self.limiter.forget((namespace or "/", args[0]))
            return await original(event, namespace, *args)

        setattr(trigger_event, _MARK, True)
        # Private hook: the only place every connect handler (function or
        # namespace class, or none at all) is called from.
        set_server_hook(self.sio, "_trigger_event", trigger_event)

    def _wrap_handle_event(self) -> None:
        original = server_hook(self.sio, "_handle_event")
        if getattr(original, _MARK, False):
            return

        async def handle_event(eio_sid: str, namespace: str | None, id: Any, data: Any) -> Any:
            ns = namespace or "/"
            sid = self.sio.manager.sid_from_eio_sid(eio_sid, ns)
            if sid is not None and self.limiter is not None:
                verdict = self.limiter.check((ns, sid), self.clock())
                if verdict is not Verdict.ALLOW:
                    await self._over_limit(sid, ns, verdict, data)
                    return None
            return await original(eio_sid, namespace, id, data)

        setattr(handle_event, _MARK, True)
        # Private hook: runs before python-socketio starts a task for the
        # handler, so a flood costs no tasks.
        set_server_hook(self.sio, "_handle_event", handle_event)

    # Auth

    async def _connect(self, original: Any, namespace: str, args: tuple[Any, ...]) -> Any:
        from .auth import CLAIMS_KEY, ENVIRON_CLAIMS_KEY, AuthRejected, extract_token

        assert self.verifier is not None
        sid, environ = args[0], args[1]
        claims = self._retry_claims.pop(sid, None)
        if claims is None:
            auth = args[2] if len(args) > 2 else None
            try:
                claims = self.verifier.verify(extract_token(auth, environ))
            except AuthRejected as exc:
                self.counters["auth_failed"] += 1
                key = f"auth_failed_{exc.reason}"
                self.counters[key] = self.counters.get(key, 0) + 1
                log.info("connection %s to %s refused: %s", sid, namespace, exc.message)
                raise SioConnectionRefused(exc.message, {"reason": exc.reason}) from None
            self.counters["auth_ok"] += 1
        environ[ENVIRON_CLAIMS_KEY] = claims
        await self.sio.save_session(sid, {CLAIMS_KEY: claims}, namespace=namespace)
        try:
            result = await original("connect", namespace, *args)
        except TypeError:
            # python-socketio calls a handler without ``auth`` again, without
            # it: keep the claims for that second call instead of verifying twice.
            if len(args) > 2:
                self._retry_claims[sid] = claims
            raise
        if result is not False:
            # The handler may have replaced the session; the claims stay.
            session = await self.sio.get_session(sid, namespace=namespace)
            if isinstance(session, dict) and CLAIMS_KEY not in session:
                session[CLAIMS_KEY] = claims
                await self.sio.save_session(sid, session, namespace=namespace)
        return result

    # Rate limit

    async def _over_limit(self, sid: str, namespace: str, verdict: Verdict, data: Any) -> None:
        assert self.limiter is not None
        self.counters["rate_limited"] += 1
        disconnect = self.config.limits.event_rate_action == "disconnect"
        if verdict is Verdict.LIMITED_NOTIFY or disconnect:
            named = isinstance(data, list) and data and isinstance(data[0], str)
            event = data[0] if named else None
            notice = {
                "event": event,
                "limit_per_s": self.limiter.rate,
                "burst": self.limiter.burst,
                "action": self.config.limits.event_rate_action,
            }
            await self.sio.emit(RATE_LIMITED_EVENT, notice, to=sid, namespace=namespace)
        if disconnect:
            self.counters["rate_limited_disconnects"] += 1
            self.limiter.forget((namespace, sid))
            await self.sio.disconnect(sid, namespace=namespace)
        else:
            self.counters["rate_limited_dropped"] += 1


def install_guards(sio: Any, config: WorkerConfig) -> Guards:
    """Apply [socketio], [auth] and per-socket [limits] settings to ``sio``.

    Raises :class:`worker.auth.AuthConfigError` (naming the ``auth.*`` key)
    when the auth settings cannot work, e.g. ``algorithms = ["none"]``.
    """
    guards = Guards(sio, config)
    guards.install()
    return guards
