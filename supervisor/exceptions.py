"""Errors raised by the supervisor package.

::

    SupervisorError
     ├── ConfigError       bad config file, variable or flag; names the key
     ├── AppSpecError      APP is not ``module:attr``
     └── Halt              stop the master with an exit code (carries it)
"""

from __future__ import annotations

__all__ = ["AppSpecError", "ConfigError", "Halt", "SupervisorError"]


class SupervisorError(Exception):
    """Base class of the supervisor's errors."""


class ConfigError(SupervisorError):
    """The configuration is invalid; the message names the key and its source."""


class AppSpecError(SupervisorError):
    """The APP argument is malformed."""


class Halt(SupervisorError):
    """Stop the master; ``code`` is the process exit code."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
