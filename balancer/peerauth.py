"""Authenticating a request forwarded by another host of the cluster.

When a request lands on a host that does not own its sid, that host's
balancer forwards it to the owner's balancer and adds one header::

    x-siocluster-forward: v1 <from-host> <unix-ms> <client-ip> <client-port> <hmac>

``hmac`` is HMAC-SHA256, keyed with ``[cluster] peer_token``, over the
version, the sending host, the timestamp, the client address and the request
line (method and target).  The bare token never travels.  The owner accepts the
header only when the MAC matches and the timestamp is within
:data:`MAX_SKEW_S` of its own clock; then, and only then, it believes the
client address the header carries, and it never forwards that request again.
A request that carries the header but fails the check is answered 403 and
counted: it claims to be a forward and is not one.

A captured header can be replayed within the skew window, but only for the
same method and target, which is what a retrying proxy might send anyway; the
token itself cannot be recovered from it.  Pure: no I/O, no clock of its own.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass

__all__ = [
    "FORWARD_HEADER",
    "MAX_SKEW_S",
    "MIN_TOKEN_CHARS",
    "ForwardClaim",
    "sign_forward",
    "token_error",
    "verify_forward",
]

FORWARD_HEADER = "x-siocluster-forward"
MAX_SKEW_S = 30.0
MIN_TOKEN_CHARS = 32
_VERSION = "v1"


@dataclass(frozen=True, slots=True)
class ForwardClaim:
    """A verified forward: who sent it, and the client it came from."""

    from_host: str
    client_ip: str
    client_port: int


def token_error(token: str) -> str | None:
    if not token:
        return "is required when several hosts form a cluster"
    if len(token) < MIN_TOKEN_CHARS:
        return f"must be at least {MIN_TOKEN_CHARS} characters, got {len(token)}"
    return None


def _mac(token: str, fields: tuple[str, ...], method: str, target: str) -> str:
    message = "\n".join((*fields, method.upper(), target)).encode("utf-8", "surrogateescape")
    return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()


def sign_forward(token: str, from_host: str, now_s: float, client_ip: str, client_port: int,
                 method: str, target: str) -> str:
    """The header value a forwarding host adds to ``method target``."""
    fields = (_VERSION, from_host, str(int(now_s * 1000)), client_ip, str(client_port))
    return " ".join((*fields, _mac(token, fields, method, target)))


def verify_forward(token: str, value: str, now_s: float, method: str,
                   target: str) -> ForwardClaim | None:
    """The claim in header ``value`` if it is genuine and fresh, else None."""
    parts = value.split(" ")
    if len(parts) != 6 or parts[0] != _VERSION or not token:
        return None
    _version, from_host, stamp, client_ip, client_port, mac = parts
    try:
        sent_s = int(stamp) / 1000
        port = int(client_port)
        ipaddress.ip_address(client_ip)
    except ValueError:
        return None
    if abs(now_s - sent_s) > MAX_SKEW_S or not 0 <= port <= 65535:
        return None
    expected = _mac(token, tuple(parts[:5]), method, target)
    if not hmac.compare_digest(expected, mac):
        return None
    return ForwardClaim(from_host, client_ip, port)
