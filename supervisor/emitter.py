"""Emit to the cluster's clients from code outside it (a Celery task, a web view, a cron job).

Usage::

    from supervisor.emitter import Emitter

    emitter = Emitter.from_config("config.toml")   # the cluster's own config file
    emitter.emit("report_ready", {"id": 42}, to="user:7")
    emitter.close()

:class:`Emitter` is synchronous (no event loop needed: Celery, Django, RQ, a
script); :class:`AsyncEmitter` has the same API with ``await``.  ``emit`` has
the signature of ``sio.emit``: ``event, data, to/room, skip_sid, namespace``
(a tuple ``data`` is several arguments; ``skip_sid`` may name rooms too, and
acknowledgement callbacks are refused: there is no client to answer them).

How it reaches the cluster (``via``), by default from ``[adapter] backend``:

* ``"redis"`` (backend ``redis``): publish python-socketio's write-only format
  on ``[adapter] emitter_channel``: every worker hears it and delivers to its
  own clients.  Binary data works.
* ``"amqp"`` (backend ``amqp``): publish, persistent and with publisher
  confirms, to the durable exchange ``[adapter] emitter_channel``; it is kept
  while the cluster is down, within the queue's bounds.
* ``"http"`` (backends ``local`` and ``none``, or any when asked): ``POST
  /emit`` on the admin listener, with ``[admin] token``.  JSON only: bytes are
  refused with :class:`TypeError`.

Errors raise :class:`EmitterError` (a 4xx/5xx from ``POST /emit``, a broker
that refused or could not be reached).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from socketio.packet import Packet

from worker.adapter.amqp_emitter import emit_queue_arguments

from .config import Config, load_config

__all__ = ["AsyncEmitter", "Emitter", "EmitterError", "pubsub_message"]

Via = Literal["http", "redis", "amqp"]


class EmitterError(Exception):
    """The emit was not accepted; the message says by whom and why."""


def pubsub_message(
    event: str, data: Any, *, namespace: str | None, room: Any, skip_sid: Any, host_id: str
) -> dict[str, Any]:
    """python-socketio's ``AsyncPubSubManager.emit`` message, byte for byte in JSON."""
    args = list(data) if isinstance(data, tuple) else [data]
    binary = Packet.data_is_binary(args)
    if binary:
        packet, attachments = Packet.deconstruct_binary(args)
        args = [packet, *[base64.b64encode(a).decode() for a in attachments]]
    return {"method": "emit", "event": event, "data": args, "binary": binary,
            "namespace": namespace or "/", "room": room, "skip_sid": skip_sid,
            "callback": None, "host_id": host_id}


def _http_body(event: str, data: Any, namespace: str | None, room: Any,
               skip_sid: Any) -> bytes:
    body: dict[str, Any] = {"event": event, "namespace": namespace or "/"}
    if isinstance(data, tuple):
        body["args"] = list(data)
    else:
        body["data"] = data
    if isinstance(room, list | tuple):
        body["rooms"] = list(room)
    elif room is not None:
        body["room"] = room
    if skip_sid is not None:
        body["except"] = list(skip_sid) if isinstance(skip_sid, list | tuple) else skip_sid
    if Packet.data_is_binary([data]):
        raise TypeError("binary data cannot go through POST /emit (JSON); use via='redis' "
                        "or via='amqp', or base64 it")
    try:
        return json.dumps(body, separators=(",", ":")).encode()
    except TypeError as exc:
        raise TypeError(f"data is not JSON-serializable: {exc}") from None


def _admin_url(config: Config) -> str:
    host = config.admin.host
    try:
        if ipaddress.ip_address(host).is_unspecified:
            host = "127.0.0.1" if ":" not in host else "::1"
    except ValueError:
        pass
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.admin.port}"


def _default_via(config: Config) -> Via:
    backend = config.adapter.backend
    if backend == "redis" and config.adapter.emitter_channel:
        return "redis"
    if backend == "amqp":
        return "amqp"
    return "http"


class _Base:
    def __init__(self, via: Via, *, admin_url: str = "", token: str = "", url: str = "",
                 channel: str = "socketio", timeout_s: float = 10.0,
                 amqp_queue: str = "", amqp_queue_arguments: dict[str, Any] | None = None,
                 ) -> None:
        self.via = via
        self.amqp: dict[str, Any] = {"queue": amqp_queue,
                                     "queue_arguments": amqp_queue_arguments or {}}
        self.admin_url = admin_url.rstrip("/")
        self.token = token
        self.url = url
        self.channel = channel
        self.timeout_s = timeout_s
        self.host_id = uuid.uuid4().hex

    @classmethod
    def _from_config(cls, config: Config | str | Path | None, via: Via | None,
                     env: Mapping[str, str] | None, **kwargs: Any) -> Any:
        if not isinstance(config, Config):
            path = Path(config) if config is not None else None
            config = load_config(path, env=os.environ if env is None else env)
        via = via or _default_via(config)
        url = config.adapter.amqp_url if via == "amqp" else config.adapter.redis_url
        ac = config.adapter
        amqp_args = emit_queue_arguments(ac.emitter_queue_ttl_s, ac.emitter_queue_max)
        kwargs.setdefault("amqp_queue", f"{ac.channel}.emit")
        kwargs.setdefault("amqp_queue_arguments", amqp_args)
        return cls(via, admin_url=_admin_url(config), token=config.admin.token, url=url,
                   channel=ac.emitter_channel or "socketio", **kwargs)

    def _check(self, callback: Any) -> None:
        if callback is not None:
            raise ValueError("callbacks need a connected server; an emitter cannot get acks")

    def _request(self, body: bytes) -> urllib.request.Request:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return urllib.request.Request(f"{self.admin_url}/emit", data=body, method="POST",
                                      headers=headers)


class Emitter(_Base):
    """Synchronous emitter; see the module docstring."""

    _redis: Any = None

    @classmethod
    def from_config(cls, config: Config | str | Path | None = None, *, via: Via | None = None,
                    env: Mapping[str, str] | None = None, **kwargs: Any) -> Emitter:
        """From the cluster's config file (or a loaded :class:`Config`), env vars applied."""
        emitter: Emitter = cls._from_config(config, via, env, **kwargs)
        return emitter

    def emit(self, event: str, data: Any = None, to: Any = None, room: Any = None,
             skip_sid: Any = None, namespace: str | None = None,
             callback: Any = None, **kwargs: Any) -> None:
        self._check(callback)
        room = to or room
        if self.via == "http":
            self._post(_http_body(event, data, namespace, room, skip_sid))
        elif self.via == "redis":
            import redis

            message = pubsub_message(event, data, namespace=namespace, room=room,
                                     skip_sid=skip_sid, host_id=self.host_id)
            try:
                if self._redis is None:
                    self._redis = redis.Redis.from_url(self.url,
                                                       socket_timeout=self.timeout_s)
                self._redis.publish(self.channel, json.dumps(message))
            except redis.RedisError as exc:
                raise EmitterError(f"redis publish failed: {exc}") from None
        else:
            from .emitter_amqp import publish_sync

            message = pubsub_message(event, data, namespace=namespace, room=room,
                                     skip_sid=skip_sid, host_id=self.host_id)
            publish_sync(self.url, self.channel, json.dumps(message).encode(), self.timeout_s,
                         **self.amqp)

    def _post(self, body: bytes) -> None:
        try:
            with urllib.request.urlopen(self._request(body), timeout=self.timeout_s):
                return
        except urllib.error.HTTPError as exc:
            try:
                reason = json.loads(exc.read()).get("error", "")
            except ValueError:
                reason = ""
            raise EmitterError(f"POST /emit: {exc.code} {reason}".rstrip()) from None
        except OSError as exc:
            raise EmitterError(f"POST /emit to {self.admin_url}: {exc}") from None

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()
            self._redis = None


class AsyncEmitter(_Base):
    """``asyncio`` emitter; same API as :class:`Emitter`, with ``await``."""

    _redis: Any = None
    _amqp: Any = None

    @classmethod
    def from_config(cls, config: Config | str | Path | None = None, *, via: Via | None = None,
                    env: Mapping[str, str] | None = None, **kwargs: Any) -> AsyncEmitter:
        emitter: AsyncEmitter = cls._from_config(config, via, env, **kwargs)
        return emitter

    async def emit(self, event: str, data: Any = None, to: Any = None, room: Any = None,
                   skip_sid: Any = None, namespace: str | None = None,
                   callback: Any = None, **kwargs: Any) -> None:
        self._check(callback)
        room = to or room
        if self.via == "http":
            import aiohttp

            body = _http_body(event, data, namespace, room, skip_sid)
            req = self._request(body)
            try:
                async with aiohttp.ClientSession() as session, session.post(
                    req.full_url, data=body, headers=dict(req.header_items()),
                    timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                ) as resp:
                    if resp.status != 200:
                        try:
                            reason = (await resp.json()).get("error", "")
                        except (ValueError, aiohttp.ContentTypeError):
                            reason = ""
                        raise EmitterError(f"POST /emit: {resp.status} {reason}".rstrip())
            except aiohttp.ClientError as exc:
                raise EmitterError(f"POST /emit to {self.admin_url}: {exc}") from None
            return
        message = pubsub_message(event, data, namespace=namespace, room=room,
                                 skip_sid=skip_sid, host_id=self.host_id)
        if self.via == "redis":
            import redis.asyncio as aioredis
            from redis.exceptions import RedisError

            try:
                if self._redis is None:
                    self._redis = aioredis.Redis.from_url(self.url,
                                                          socket_timeout=self.timeout_s)
                await self._redis.publish(self.channel, json.dumps(message))
            except RedisError as exc:
                raise EmitterError(f"redis publish failed: {exc}") from None
        else:
            from .emitter_amqp import AmqpPublisher

            if self._amqp is None:
                self._amqp = AmqpPublisher(self.url, self.channel, self.timeout_s, **self.amqp)
            await self._amqp.publish(json.dumps(message).encode())

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
        if self._amqp is not None:
            await self._amqp.close()
            self._amqp = None
