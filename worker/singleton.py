"""``@singleton("name")``: a background task that runs on one worker of the cluster.

Every worker runs the app's module, so ``sio.start_background_task`` or a task
started in an app factory runs in every worker: N workers on H hosts run it
N x H times.  A function decorated with :func:`singleton` instead runs on the
one worker that holds the lease ``name``:

* ``local`` adapter backend (or ``none``): one worker per host; the master
  grants the lease over each worker's control channel;
* ``redis``: one worker across every host sharing the Redis server (and the
  ``[adapter] channel``); the lease is a Redis key;
* ``amqp``: one worker across every host sharing the RabbitMQ broker (and the
  ``[adapter] channel``); the lease is an exclusive queue
  (:mod:`worker.singleton_amqp`).

The holder runs the function while it holds the lease; it is cancelled when the
lease is lost, and another worker starts it when the holder dies, drains or
hangs (see :mod:`worker.lease` for the rules and the fence, and
:mod:`worker.singleton_runner` for the machinery).

The fence, on the app's side: inside the function (and any task it starts),
every emit through ``sio.manager`` checks that the lease is still valid by
this worker's own clock, and raises :class:`LeaseLost` (a
:class:`asyncio.CancelledError`) instead of emitting when it is not.  So a
holder paused past its lease (SIGSTOP, a blocked loop) cannot emit once it
resumes, even before its watchdog timer had a chance to cancel it.

Usage::

    from worker.singleton import singleton

    @singleton("clock")
    async def clock() -> None:
        while True:
            await sio.emit("tick", time.time())
            await asyncio.sleep(1)

The function takes no arguments.  Write it as a loop: if it raises, the error
is logged and it is started again after a backoff (1 s doubling to 30 s) on
the same holder; if it returns, it is done until the lease moves to another
worker, which starts it afresh.  Outside siocluster (``python app.py``) the
decorator only registers the function; nothing runs it.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from .lease import HolderLease

__all__ = [
    "LeaseLost",
    "SingletonSpec",
    "Tenure",
    "current_tenure",
    "install_fence",
    "registered",
    "singleton",
]

_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")

SingletonFunc = Callable[[], Awaitable[Any]]
_F = TypeVar("_F", bound=SingletonFunc)


class LeaseLost(asyncio.CancelledError):
    """Raised inside a singleton's task that tried to emit without a valid lease."""


@dataclass(frozen=True, slots=True)
class SingletonSpec:
    name: str
    func: SingletonFunc


_registry: dict[str, SingletonSpec] = {}


def singleton(name: str) -> Callable[[_F], _F]:
    """Run the decorated ``async def f()`` on one worker of the cluster at a time."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"singleton name {name!r} must be 1-100 characters of letters, digits, _ . : -"
        )

    def decorate(func: _F) -> _F:
        checked: Any = func  # iscoroutinefunction's TypeGuard would drop _F
        if not inspect.iscoroutinefunction(checked):
            raise TypeError(f"@singleton({name!r}) needs an async def function, got {func!r}")
        if inspect.signature(func).parameters:
            raise TypeError(f"@singleton({name!r}): {func.__qualname__} must take no arguments")
        known = _registry.get(name)
        if known is not None and not _same(known.func, func):
            raise ValueError(
                f"@singleton({name!r}) is already {known.func.__module__}."
                f"{known.func.__qualname__}; singleton names must be unique"
            )
        # A module imported twice registers again: the latest import wins.
        _registry[name] = SingletonSpec(name, func)
        return func

    return decorate


def _same(a: SingletonFunc, b: SingletonFunc) -> bool:
    """The same source function (a module imported twice), not just the same name."""
    code_a, code_b = getattr(a, "__code__", None), getattr(b, "__code__", None)
    if code_a is None or code_b is None:
        return a is b
    return (a.__qualname__, code_a.co_filename, code_a.co_firstlineno) == (
        b.__qualname__, code_b.co_filename, code_b.co_firstlineno
    )


def registered() -> list[SingletonSpec]:
    """The singletons the app's modules declared, in name order."""
    return [_registry[n] for n in sorted(_registry)]


def _clear_registry() -> None:  # tests only
    _registry.clear()


# The fence

@dataclass(frozen=True, slots=True)
class Tenure:
    """One run of one singleton: valid while its lease keeps this token."""

    name: str
    lease: HolderLease
    token: int

    def check(self) -> None:
        if self.lease.token != self.token or not self.lease.valid(time.monotonic()):
            raise LeaseLost(f"singleton {self.name!r} lost its lease; not emitting")


current_tenure: contextvars.ContextVar[Tenure | None] = contextvars.ContextVar(
    "siocluster_singleton_tenure", default=None
)

_FENCED = ("emit", "broadcast", "server_side_emit", "server_side_emit_with_ack")


def install_fence(manager: Any) -> None:
    """Make the client manager's emit paths check the caller's tenure, if it has one.

    Wraps the instance's public methods (python-socketio's ``emit``; the
    cluster manager's ``broadcast`` and ``server_side_emit*``); code outside a
    singleton runs with no tenure and pays one ContextVar lookup.
    """
    if getattr(manager, "_siocluster_fenced", False):
        return
    for attr in _FENCED:
        method = getattr(manager, attr, None)
        if method is None:
            continue
        setattr(manager, attr, _fenced(method))
    manager._siocluster_fenced = True


def _fenced(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    # A plain function returning the coroutine, not a coroutine itself: no extra
    # frame per emit.  ``await manager.emit(...)`` sees the raise all the same.
    @functools.wraps(method)
    def guarded(*args: Any, **kwargs: Any) -> Awaitable[Any]:
        tenure = current_tenure.get()
        if tenure is not None:
            tenure.check()
        return method(*args, **kwargs)

    return guarded
