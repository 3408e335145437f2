"""Errors raised by the worker package.

::

    WorkerError
     ├── AppLoadError      APP cannot be imported or is not a Socket.IO app
     └── AuthConfigError   an [auth] setting cannot work; names the key
"""

from __future__ import annotations

__all__ = ["AppLoadError", "AuthConfigError", "WorkerError"]


class WorkerError(Exception):
    """Base class of the worker's errors."""


class AppLoadError(WorkerError):
    """The user's app could not be imported or built; the message names it."""


class AuthConfigError(WorkerError):
    """An ``[auth]`` setting cannot work; the message names the key."""
