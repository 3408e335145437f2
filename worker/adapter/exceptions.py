"""Errors raised by the cross-worker adapter.

::

    AdapterError
     ├── ProtocolError         a frame from a peer cannot be parsed (remote fault)
     │    └── UnsupportedVersion   the frame is from a newer adapter
     ├── EncodingError         local data cannot be put on the wire (local misuse)
     ├── BackendError          the transport cannot be set up (bad URL, no socket dir)
     └── RequestTimeout        a cluster request got fewer replies than expected;
                               carries the partial ``results`` and the ``missing`` nodes

Messages are lowercase.  :class:`RequestTimeout` also subclasses
:class:`TimeoutError` so ``except TimeoutError`` keeps working.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AdapterError",
    "BackendError",
    "EncodingError",
    "ProtocolError",
    "RequestTimeout",
    "UnsupportedVersion",
]


class AdapterError(Exception):
    """Base class of the adapter's errors."""


class ProtocolError(AdapterError):
    """A frame received from a peer is malformed."""


class UnsupportedVersion(ProtocolError):
    """A frame carries an envelope version this adapter does not speak."""


class EncodingError(AdapterError):
    """Data given to the adapter cannot be serialized (not JSON/msgpack-able)."""


class BackendError(AdapterError):
    """The transport cannot be configured or started."""


class RequestTimeout(AdapterError, TimeoutError):
    """A cluster-wide request timed out before every live peer answered.

    ``results`` holds what did arrive (same shape as a successful return value)
    and ``missing`` names the nodes that did not answer.
    """

    def __init__(self, message: str, *, results: Any, missing: frozenset[str]) -> None:
        super().__init__(message)
        self.results = results
        self.missing = missing
