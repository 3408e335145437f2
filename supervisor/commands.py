"""Commands the master's loop takes: from signals, the admin endpoint and the CLI."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Command"]


@dataclass(frozen=True)
class Command:
    name: str  # "stop" | "reload" | "scale"
    workers: int = 0
