"""Forwarded-header policy.  Pure functions.

The balancer decides who the client is, once, and tells the worker with a
single-entry ``X-Forwarded-For`` (plus ``X-Forwarded-Proto``).  A client's own
X-Forwarded-For is believed only when the TCP peer is one of
``[balancer] trusted_proxies``; then the chain is walked from the right,
skipping trusted hops, and the first untrusted address is the client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from functools import lru_cache

__all__ = ["TrustedProxies", "forwarded", "request_head", "resolve_client"]

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


def forwarded(client: str, proto: str) -> list[bytes]:
    """The header lines that tell a worker who the client is."""
    return [b"X-Forwarded-For: " + client.encode("latin-1"),
            b"X-Forwarded-Proto: " + proto.encode("latin-1")]


def request_head(
    method: str,
    raw_path: str,
    raw_headers: Iterable[tuple[bytes, bytes]],
    *,
    drop: frozenset[bytes] = frozenset(),
    extra: Sequence[bytes] = (),
) -> bytes:
    """An HTTP/1.1 request head, without the headers named (lower-case) in ``drop``."""
    lines = [f"{method} {raw_path} HTTP/1.1".encode("latin-1")]
    lines += [name + b": " + value for name, value in raw_headers if name.lower() not in drop]
    lines += extra
    return b"\r\n".join(lines) + b"\r\n\r\n"
