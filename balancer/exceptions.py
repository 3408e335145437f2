"""Errors raised by the balancer package.

::

    BalancerError
     └── UpstreamError     a worker could not be reached or answered garbage
"""

from __future__ import annotations

__all__ = ["BalancerError", "UpstreamError"]


class BalancerError(Exception):
    """Base class of the balancer's errors."""


class UpstreamError(BalancerError):
    """A worker could not be reached, or its answer could not be read."""
