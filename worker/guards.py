"""Per-connection and per-event guards installed in every worker.

:func:`install_guards` is called once per worker, before it listens.
"""

from __future__ import annotations

from typing import Any

from supervisor.config import Config

__all__ = ["install_guards"]


def install_guards(sio: Any, config: Config) -> None:
    """Apply [socketio], [auth] and per-socket [limits] settings to ``sio``."""
    return None
