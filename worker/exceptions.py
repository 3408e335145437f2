"""Errors raised by the worker package.

::

    WorkerError
     └── AppLoadError    APP cannot be imported or is not a Socket.IO app
"""

from __future__ import annotations

__all__ = ["AppLoadError", "WorkerError"]


class WorkerError(Exception):
    """Base class of the worker's errors."""


class AppLoadError(WorkerError):
    """The user's app could not be imported or built; the message names it."""
