"""Cross-worker adapter: the entry point the worker runtime calls.

:func:`install_adapter` replaces the app's client manager before the worker
reports ready, and returns an :class:`AdapterHandle` for status and shutdown.
"""

from __future__ import annotations

from typing import Any, Protocol

from supervisor.config import Config

__all__ = ["AdapterHandle", "install_adapter"]


class AdapterHandle(Protocol):
    def status(self) -> dict[str, Any]: ...

    async def close(self) -> None: ...


class _NoAdapter:
    def status(self) -> dict[str, Any]:
        return {"backend": "none", "state": "disabled"}

    async def close(self) -> None:
        return None


async def install_adapter(
    sio: Any, config: Config, *, slot: int, generation: int, runtime_dir: str
) -> AdapterHandle:
    return _NoAdapter()
