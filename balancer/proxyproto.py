"""Parse a HAProxy PROXY protocol header (versions 1 and 2).  Pure.

When the balancer sits behind a load balancer that speaks the PROXY protocol,
every connection starts with a small header naming the original client before
any application byte.  The front door peeks at the socket with ``MSG_PEEK``,
consuming nothing, and hands the peeked bytes to :func:`parse_proxy_header`:

* :data:`NEED_MORE` -- the bytes so far are a valid beginning; peek again
  (a v1 header never exceeds :data:`MAX_V1_BYTES`, a v2 one
  :data:`MAX_V2_BYTES`, so the peek buffer is bounded);
* :class:`ProxyHeader` -- consume exactly ``length`` bytes with ``recv`` and
  then peek for the HTTP head as usual; ``source`` is the client to use for
  rate limiting and logging, or ``None`` when the header carries no usable
  address (v1 ``UNKNOWN``, v2 ``LOCAL``, v2 ``UNSPEC`` or ``AF_UNIX``), in which
  case the caller keeps the TCP peer address;
* :class:`InvalidProxyHeader` -- not a PROXY header (or a malformed one):
  close the connection, since a proxy-protocol listener must never guess.

Only what the header itself says is decided here: nothing is read, nothing is
consumed, and no input makes this module raise.  Version 2 TLVs after the
address block are skipped (but counted in ``length``).  An IPv4-mapped IPv6
source (``::ffff:a.b.c.d``) is reported as the plain IPv4 address.

Reference: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from .peek import NEED_MORE, NeedMore

__all__ = [
    "MAX_V1_BYTES",
    "MAX_V2_BYTES",
    "NEED_MORE",
    "InvalidProxyHeader",
    "NeedMore",
    "ProxyHeader",
    "parse_proxy_header",
]

MAX_V1_BYTES = 107
"""The longest v1 line, ``PROXY`` to ``CRLF`` inclusive."""

MAX_V2_BYTES = 16 + 65535
"""The 16-byte fixed v2 header plus the largest length its 16-bit field can say."""

_V1_PREFIX = b"PROXY "
_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_FIXED = 16

_V2_LOCAL = 0x0
_V2_PROXY = 0x1
_V2_UNSPEC = 0x00
_V2_TCP4 = 0x11
_V2_TCP6 = 0x21
_V2_UNIX = frozenset({0x31, 0x32})
_V2_ADDRESS_BYTES = {_V2_TCP4: 12, _V2_TCP6: 36}


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A complete header: consume ``length`` bytes, then the stream is the client's."""

    length: int
    source: tuple[str, int] | None
    version: int


@dataclass(frozen=True, slots=True)
class InvalidProxyHeader:
    reason: str


def parse_proxy_header(data: bytes) -> NeedMore | ProxyHeader | InvalidProxyHeader:
    """Parse the header at the start of ``data`` (bytes peeked from the stream)."""
    if data.startswith(_V1_PREFIX):
        return _parse_v1(data)
    if data.startswith(_V2_SIGNATURE):
        return _parse_v2(data)
    if _V1_PREFIX.startswith(data) or _V2_SIGNATURE.startswith(data):
        return NEED_MORE
    return InvalidProxyHeader("no proxy protocol header")


def _parse_v1(data: bytes) -> NeedMore | ProxyHeader | InvalidProxyHeader:
    end = data.find(b"\r\n", 0, MAX_V1_BYTES)
    if end < 0:
        if len(data) < MAX_V1_BYTES:
            return NEED_MORE
        return InvalidProxyHeader("v1 header too long")
    length = end + 2
    fields = data[:end].split(b" ")
    protocol = fields[1]
    if protocol == b"UNKNOWN":
        return ProxyHeader(length=length, source=None, version=1)
    if protocol not in (b"TCP4", b"TCP6"):
        return InvalidProxyHeader("unsupported v1 protocol")
    if len(fields) != 6:
        return InvalidProxyHeader("bad v1 field count")
    source = _v1_address(fields[2], protocol)
    destination = _v1_address(fields[3], protocol)
    if source is None or destination is None:
        return InvalidProxyHeader("bad v1 address")
    source_port = _v1_port(fields[4])
    destination_port = _v1_port(fields[5])
    if source_port is None or destination_port is None:
        return InvalidProxyHeader("bad v1 port")
    return ProxyHeader(length=length, source=(_client(source), source_port), version=1)


def _v1_address(
    field: bytes, protocol: bytes
) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        text = field.decode("ascii")
    except UnicodeDecodeError:
        return None
    if "%" in text:  # a scope id: the stdlib accepts it, the protocol does not
        return None
    try:
        if protocol == b"TCP4":
            return ipaddress.IPv4Address(text)
        return ipaddress.IPv6Address(text)
    except ValueError:
        return None


def _v1_port(field: bytes) -> int | None:
    if not field.isdigit() or len(field) > 5:  # bytes.isdigit is ASCII-only
        return None
    if field.startswith(b"0") and field != b"0":
        return None
    port = int(field)
    return port if port <= 65535 else None


def _parse_v2(data: bytes) -> NeedMore | ProxyHeader | InvalidProxyHeader:
    # Everything the 16-byte fixed part can decide is decided before waiting
    # for the (up to 64 KiB) rest.
    if len(data) < _V2_FIXED:
        return NEED_MORE
    version, command = data[12] >> 4, data[12] & 0x0F
    if version != 2:
        return InvalidProxyHeader("unsupported v2 version")
    if command not in (_V2_LOCAL, _V2_PROXY):
        return InvalidProxyHeader("unsupported v2 command")
    family = data[13]
    body = int.from_bytes(data[14:16], "big")
    if command == _V2_PROXY:
        if family != _V2_UNSPEC and family not in _V2_UNIX and family not in _V2_ADDRESS_BYTES:
            return InvalidProxyHeader("unsupported v2 address family")
        if body < _V2_ADDRESS_BYTES.get(family, 0):
            return InvalidProxyHeader("v2 address block too short")
    length = _V2_FIXED + body
    if len(data) < length:
        return NEED_MORE
    if command == _V2_LOCAL or family not in _V2_ADDRESS_BYTES:
        return ProxyHeader(length=length, source=None, version=2)
    block = data[_V2_FIXED:length]
    source: ipaddress.IPv4Address | ipaddress.IPv6Address
    if family == _V2_TCP4:
        source, port_at = ipaddress.IPv4Address(block[0:4]), 8
    else:
        source, port_at = ipaddress.IPv6Address(block[0:16]), 32
    port = int.from_bytes(block[port_at:port_at + 2], "big")
    return ProxyHeader(length=length, source=(_client(source), port), version=2)


def _client(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)
