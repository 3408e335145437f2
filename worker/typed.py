"""Typed Socket.IO events: validate a payload before the handler sees it.

Usage, in the app module::

    import msgspec
    import socketio
    from worker.typed import typed

    sio = socketio.AsyncServer(async_mode="aiohttp")

    class ChatMessage(msgspec.Struct):
        room: str
        text: str

    @typed(sio, "chat message", ChatMessage)
    async def chat_message(sid: str, msg: ChatMessage) -> dict[str, bool]:
        await sio.emit("chat message", {"room": msg.room, "text": msg.text}, room=msg.room)
        return {"ok": True}

Theory of operation
-------------------
:func:`typed` registers a wrapper with ``sio.on(event, namespace=...)``.  The
wrapper takes the event's single argument (the JSON-decoded payload, with any
binary attachments already in place), converts it with
``msgspec.convert(payload, model)`` -- strict: no ``"1"`` for an ``int`` --
and calls the handler with the typed value.  ``model`` may be a
``msgspec.Struct`` or any type msgspec understands (``list[int]``, a
``TypedDict``, a dataclass...); a pydantic ``BaseModel`` works too when pydantic
is installed (it is not a dependency: ``model.model_validate`` is used).

A payload that does not convert never reaches the handler.  The client's ack,
if it asked for one, is::

    {"error": "invalid_payload", "detail": "Expected `str`, got `int`", "path": "$.text"}

and the rejection is counted (:func:`typed_stats`).  Without an ack the event
is dropped silently, as Socket.IO does for events nobody handles.

The decorator returns the handler unchanged, so it can still be called (and
unit-tested) directly with a typed value.
"""

from __future__ import annotations

import inspect
import re
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

__all__ = [
    "INVALID_PAYLOAD",
    "PayloadError",
    "registered",
    "typed",
    "typed_stats",
    "validate",
]

INVALID_PAYLOAD = "invalid_payload"

_H = TypeVar("_H", bound=Callable[..., Any])
_MSGSPEC_PATH = re.compile(r"^(?P<detail>.*?)(?: - at `(?P<path>\$[^`]*)`)?$", re.DOTALL)

# Per server: counters and the (namespace, event) -> model table.  Weak, so a
# test that builds many servers does not keep them alive.
_stats: weakref.WeakKeyDictionary[Any, dict[str, int]] = weakref.WeakKeyDictionary()
_registry: weakref.WeakKeyDictionary[Any, dict[tuple[str, str], Any]] = (
    weakref.WeakKeyDictionary()
)


class PayloadError(Exception):
    """A payload did not match its model; ``path`` is JSONPath-like (``$.a[0]``)."""

    def __init__(self, detail: str, path: str = "$") -> None:
        super().__init__(f"{detail} at {path}")
        self.detail = detail
        self.path = path

    def ack(self) -> dict[str, str]:
        return {"error": INVALID_PAYLOAD, "detail": self.detail, "path": self.path}


def _pydantic_path(loc: Any) -> str:
    path = "$"
    for part in loc or ():
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def validate(payload: Any, model: Any) -> Any:
    """``payload`` as an instance of ``model``, or :class:`PayloadError`."""
    validate_pydantic = getattr(model, "model_validate", None)
    if callable(validate_pydantic):
        try:
            return validate_pydantic(payload, strict=True)
        except ValueError as exc:  # pydantic.ValidationError is a ValueError
            errors = getattr(exc, "errors", None)
            first = errors()[0] if callable(errors) and errors() else {}
            raise PayloadError(
                str(first.get("msg", exc)), _pydantic_path(first.get("loc"))
            ) from None
    try:
        return msgspec.convert(payload, type=model)
    except msgspec.ValidationError as exc:
        match = _MSGSPEC_PATH.match(str(exc))
        assert match is not None  # the pattern matches any string
        raise PayloadError(match["detail"], match["path"] or "$") from None


def typed(
    sio: Any, event: str, model: Any, *, namespace: str | None = None
) -> Callable[[_H], _H]:
    """Register ``handler(sid, payload: model)`` for ``event``, validating first."""
    ns = namespace or "/"

    def decorate(handler: _H) -> _H:
        stats = _stats.setdefault(sio, {"typed_invalid_payload": 0, "typed_ok": 0})

        async def wrapper(sid: str, *args: Any) -> Any:
            if len(args) != 1:
                stats["typed_invalid_payload"] += 1
                return PayloadError(f"expected one argument, got {len(args)}").ack()
            try:
                value = validate(args[0], model)
            except PayloadError as exc:
                stats["typed_invalid_payload"] += 1
                return exc.ack()
            stats["typed_ok"] += 1
            result = handler(sid, value)
            if inspect.isawaitable(result):
                result = await result
            return result

        wrapper.__name__ = getattr(handler, "__name__", "typed_handler")
        wrapper.__doc__ = handler.__doc__
        sio.on(event, namespace=namespace)(wrapper)
        _registry.setdefault(sio, {})[(ns, event)] = model
        return handler

    return decorate


def typed_stats(sio: Any) -> dict[str, int]:
    """How many payloads ``sio``'s typed handlers accepted and rejected."""
    return dict(_stats.get(sio, {"typed_invalid_payload": 0, "typed_ok": 0}))


def registered(sio: Any) -> dict[tuple[str, str], Any]:
    """The ``(namespace, event) -> model`` table of ``sio``'s typed handlers."""
    return dict(_registry.get(sio, {}))
