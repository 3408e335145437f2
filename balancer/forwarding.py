"""Forwarded-header policy.  Pure functions.

The balancer decides who the client is, once, and tells the worker with a
single-entry ``X-Forwarded-For`` (plus ``X-Forwarded-Proto``).  A client's own
X-Forwarded-For is believed only when the TCP peer is one of
``[balancer] trusted_proxies``; then the chain is walked from the right,
skipping trusted hops, and the first untrusted address is the client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

__all__ = ["TrustedProxies", "resolve_client"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    def __init__(self, entries: Iterable[str]) -> None:
        self._networks: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(e, strict=False) for e in entries
        )
        self._cached = lru_cache(maxsize=4096)(self._check)

    def __bool__(self) -> bool:
        return bool(self._networks)

    def _check(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._networks)

    def __contains__(self, address: str) -> bool:
        return bool(self._networks) and self._cached(address)


def resolve_client(peer: str, xff: str | None, trusted: TrustedProxies) -> str:
    if not xff or peer not in trusted:
        return peer
    hops = [h.strip() for h in xff.split(",") if h.strip()]
    for hop in reversed(hops):
        if hop not in trusted:
            return hop
    return hops[0] if hops else peer
