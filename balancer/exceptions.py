"""Errors raised by the balancer package.

::

    BalancerError
     └── UpstreamError     a worker could not be reached or answered garbage
          └── UpstreamUnreachable   no connection could be made at all
"""

from __future__ import annotations

__all__ = ["BalancerError", "UpstreamError", "UpstreamUnreachable"]


class BalancerError(Exception):
    """Base class of the balancer's errors."""


class UpstreamError(BalancerError):
    """A worker could not be reached, or its answer could not be read."""


class UpstreamUnreachable(UpstreamError):
    """Nothing accepted the connection: the worker or host is gone, not just slow."""
