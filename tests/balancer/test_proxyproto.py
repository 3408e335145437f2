from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from balancer.proxyproto import (
    MAX_V1_BYTES,
    NEED_MORE,
    InvalidProxyHeader,
    ProxyHeader,
    parse_proxy_header,
)

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
REQUEST = b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\r\n"

V1_TCP4 = b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 443\r\n"
V1_TCP6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 80\r\n"
V1_UNKNOWN = b"PROXY UNKNOWN\r\n"
V1_UNKNOWN_WITH_ADDRESSES = b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n"


def v2(command: int, family: int, body: bytes) -> bytes:
    return SIGNATURE + struct.pack("!BBH", 0x20 | command, family, len(body)) + body


def v2_tcp4(src: str, dst: str, sport: int, dport: int) -> bytes:
    return v2(0x1, 0x11, struct.pack("!4s4sHH", ipaddress.IPv4Address(src).packed,
                                     ipaddress.IPv4Address(dst).packed, sport, dport))


def v2_tcp6(src: str, dst: str, sport: int, dport: int) -> bytes:
    return v2(0x1, 0x21, struct.pack("!16s16sHH", ipaddress.IPv6Address(src).packed,
                                     ipaddress.IPv6Address(dst).packed, sport, dport))


V2_TCP4 = v2_tcp4("192.0.2.10", "198.51.100.1", 56324, 443)
V2_TCP6 = v2_tcp6("2001:db8::1", "2001:db8::2", 4000, 80)
V2_LOCAL = v2(0x0, 0x00, b"")
V2_WITH_TLVS = v2(0x1, 0x11, struct.pack("!4s4sHH", bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]),
                                         1234, 443)
                  + b"\x04\x00\x00"                        # PP2_TYPE_NOOP, empty
                  + b"\x02\x00\x0bexample.com")            # PP2_TYPE_AUTHORITY

VALID = [V1_TCP4, V1_TCP6, V1_UNKNOWN, V1_UNKNOWN_WITH_ADDRESSES,
         V2_TCP4, V2_TCP6, V2_LOCAL, V2_WITH_TLVS]


# -- version 1 ---------------------------------------------------------------

def test_v1_tcp4() -> None:
    assert parse_proxy_header(V1_TCP4) == ProxyHeader(
        length=len(V1_TCP4), source=("192.0.2.10", 56324), version=1)


def test_v1_tcp6() -> None:
    assert parse_proxy_header(V1_TCP6) == ProxyHeader(
        length=len(V1_TCP6), source=("2001:db8::1", 4000), version=1)


def test_v1_unknown_keeps_the_tcp_peer() -> None:
    assert parse_proxy_header(V1_UNKNOWN) == ProxyHeader(
        length=len(V1_UNKNOWN), source=None, version=1)
    assert parse_proxy_header(V1_UNKNOWN_WITH_ADDRESSES) == ProxyHeader(
        length=len(V1_UNKNOWN_WITH_ADDRESSES), source=None, version=1)


def test_v1_ports_at_the_edges() -> None:
    header = b"PROXY TCP4 192.0.2.10 198.51.100.1 0 65535\r\n"
    assert parse_proxy_header(header) == ProxyHeader(
        length=len(header), source=("192.0.2.10", 0), version=1)


def test_v1_mapped_ipv6_source_is_reported_as_ipv4() -> None:
    header = b"PROXY TCP6 ::ffff:192.0.2.10 ::ffff:198.51.100.1 56324 443\r\n"
    assert parse_proxy_header(header) == ProxyHeader(
        length=len(header), source=("192.0.2.10", 56324), version=1)


def test_v1_longest_line_is_accepted() -> None:
    header = b"PROXY UNKNOWN " + b"x" * (MAX_V1_BYTES - 16) + b"\r\n"
    assert len(header) == MAX_V1_BYTES
    assert parse_proxy_header(header) == ProxyHeader(
        length=MAX_V1_BYTES, source=None, version=1)


@pytest.mark.parametrize("header", [
    b"PROXY TCP4 192.0.2.300 198.51.100.1 56324 443\r\n",        # bad ip
    b"PROXY TCP4 192.0.2.010 198.51.100.1 56324 443\r\n",        # leading zero in an octet
    b"PROXY TCP4 192.0.2.10 198.51.100 56324 443\r\n",           # bad destination
    b"PROXY TCP4 2001:db8::1 2001:db8::2 4000 80\r\n",           # family mismatch
    b"PROXY TCP6 192.0.2.10 198.51.100.1 56324 443\r\n",         # family mismatch
    b"PROXY TCP6 fe80::1%eth0 2001:db8::2 4000 80\r\n",          # scope id
    b"PROXY TCP4 192.0.2.10 198.51.100.1 65536 443\r\n",         # port out of range
    b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 100000\r\n",      # port out of range
    b"PROXY TCP4 192.0.2.10 198.51.100.1 056324 443\r\n",        # leading zero
    b"PROXY TCP4 192.0.2.10 198.51.100.1 00 443\r\n",            # leading zero
    b"PROXY TCP4 192.0.2.10 198.51.100.1 -1 443\r\n",            # sign
    b"PROXY TCP4 192.0.2.10 198.51.100.1 +1 443\r\n",            # sign
    b"PROXY TCP4 192.0.2.10 198.51.100.1 0x10 443\r\n",          # not decimal
    b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 \r\n",            # empty port
    b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 443 extra\r\n",   # extra field
    b"PROXY TCP4 192.0.2.10 198.51.100.1 56324\r\n",             # missing field
    b"PROXY TCP4  192.0.2.10 198.51.100.1 56324 443\r\n",        # double space
    b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 443 \r\n",        # trailing space
    b"PROXY TCP4 \xc0\xa8\x00\x01 198.51.100.1 56324 443\r\n",   # not text
    b"PROXY UDP4 192.0.2.10 198.51.100.1 56324 443\r\n",         # unknown protocol
    b"PROXY tcp4 192.0.2.10 198.51.100.1 56324 443\r\n",         # lowercase protocol
    b"PROXY UNKNOWNX\r\n",
    b"PROXY \r\n",
    b"proxy TCP4 192.0.2.10 198.51.100.1 56324 443\r\n",         # lowercase "proxy"
    b"PROXY" + b"\r\n",
])
def test_v1_invalid(header: bytes) -> None:
    result = parse_proxy_header(header)
    assert isinstance(result, InvalidProxyHeader)
    assert result.reason == result.reason.lower()


def test_v1_without_crlf_within_107_bytes_is_invalid() -> None:
    line = b"PROXY UNKNOWN " + b"x" * (MAX_V1_BYTES - 14)
    assert len(line) == MAX_V1_BYTES
    assert parse_proxy_header(line[:-1]) is NEED_MORE
    assert isinstance(parse_proxy_header(line), InvalidProxyHeader)
    assert isinstance(parse_proxy_header(line + b"\r\n"), InvalidProxyHeader)
    # a CRLF straddling the limit is one byte too late
    assert isinstance(parse_proxy_header(line[:-1] + b"\r\n"), InvalidProxyHeader)


# -- version 2 ---------------------------------------------------------------

def test_v2_proxy_tcp4() -> None:
    assert parse_proxy_header(V2_TCP4) == ProxyHeader(
        length=16 + 12, source=("192.0.2.10", 56324), version=2)


def test_v2_proxy_tcp6() -> None:
    assert parse_proxy_header(V2_TCP6) == ProxyHeader(
        length=16 + 36, source=("2001:db8::1", 4000), version=2)


def test_v2_mapped_ipv6_source_is_reported_as_ipv4() -> None:
    header = v2_tcp6("::ffff:192.0.2.10", "::ffff:198.51.100.1", 56324, 443)
    assert parse_proxy_header(header) == ProxyHeader(
        length=len(header), source=("192.0.2.10", 56324), version=2)


def test_v2_local_keeps_the_tcp_peer_whatever_the_family() -> None:
    assert parse_proxy_header(V2_LOCAL) == ProxyHeader(length=16, source=None, version=2)
    for family, body in ((0x11, V2_TCP4[16:]), (0x12, b""), (0x21, b"\x00" * 4), (0x77, b"")):
        header = v2(0x0, family, body)
        assert parse_proxy_header(header) == ProxyHeader(
            length=len(header), source=None, version=2)


def test_v2_unspec_keeps_the_tcp_peer() -> None:
    for body in (b"", b"\x00" * 12):
        header = v2(0x1, 0x00, body)
        assert parse_proxy_header(header) == ProxyHeader(
            length=len(header), source=None, version=2)


def test_v2_unix_keeps_the_tcp_peer() -> None:
    body = b"/run/a.sock".ljust(108, b"\x00") + b"/run/b.sock".ljust(108, b"\x00")
    for family in (0x31, 0x32):
        header = v2(0x1, family, body)
        assert parse_proxy_header(header) == ProxyHeader(
            length=16 + 216, source=None, version=2)


def test_v2_tlvs_are_counted_in_length() -> None:
    assert parse_proxy_header(V2_WITH_TLVS) == ProxyHeader(
        length=len(V2_WITH_TLVS), source=("10.0.0.1", 1234), version=2)
    assert len(V2_WITH_TLVS) > 16 + 12


@pytest.mark.parametrize("family", [0x12, 0x22, 0x01, 0x10, 0x13, 0x41, 0xFF])
def test_v2_unsupported_family_is_invalid(family: int) -> None:
    result = parse_proxy_header(v2(0x1, family, b"\x00" * 36))
    assert result == InvalidProxyHeader("unsupported v2 address family")


@pytest.mark.parametrize("version_command", [0x11, 0x31, 0x01, 0xF1, 0x22, 0x2F])
def test_v2_bad_version_or_command_is_invalid(version_command: int) -> None:
    header = bytearray(V2_TCP4)
    header[12] = version_command
    assert isinstance(parse_proxy_header(bytes(header)), InvalidProxyHeader)


@pytest.mark.parametrize("header", [
    v2(0x1, 0x11, b"\x00" * 11),
    v2(0x1, 0x21, b"\x00" * 35),
    v2(0x1, 0x21, V2_TCP4[16:]),
])
def test_v2_short_address_block_is_invalid(header: bytes) -> None:
    assert parse_proxy_header(header) == InvalidProxyHeader("v2 address block too short")


def test_v2_is_rejected_from_the_fixed_part_alone() -> None:
    # no waiting for a body that cannot make the header valid
    assert isinstance(parse_proxy_header(v2(0x1, 0x12, b"\x00" * 1000)[:16]), InvalidProxyHeader)
    assert isinstance(parse_proxy_header(v2(0x1, 0x11, b"\x00" * 4)[:16]), InvalidProxyHeader)


def test_v2_largest_length_needs_all_its_bytes() -> None:
    header = v2(0x1, 0x11, V2_TCP4[16:] + b"\x00" * (65535 - 12))
    assert parse_proxy_header(header[:-1]) is NEED_MORE
    assert parse_proxy_header(header) == ProxyHeader(
        length=16 + 65535, source=("192.0.2.10", 56324), version=2)


# -- both --------------------------------------------------------------------

@pytest.mark.parametrize("header", VALID)
def test_every_strict_prefix_needs_more(header: bytes) -> None:
    for cut in range(len(header)):
        assert parse_proxy_header(header[:cut]) is NEED_MORE, header[:cut]


@pytest.mark.parametrize("header", VALID)
def test_bytes_after_the_header_are_not_counted(header: bytes) -> None:
    alone = parse_proxy_header(header)
    assert isinstance(alone, ProxyHeader)
    assert alone.length == len(header)
    assert parse_proxy_header(header + REQUEST) == alone
    assert parse_proxy_header(header + header) == alone


def test_no_proxy_header() -> None:
    for data in (REQUEST,
                 b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
                 b"PROXX", b"\r\n\r\n\x00\r\nQUIT\r", b"\n", b" PROXY "):
        assert parse_proxy_header(data) == InvalidProxyHeader("no proxy protocol header")


@given(st.binary(max_size=300))
def test_never_raises(data: bytes) -> None:
    for candidate in (data, b"PROXY " + data, b"PROXY TCP4 " + data, b"PROXY TCP6 " + data,
                      SIGNATURE + data, SIGNATURE + b"\x21\x11" + data,
                      SIGNATURE + b"\x21\x21" + data):
        result = parse_proxy_header(candidate)
        if isinstance(result, ProxyHeader):
            assert 0 < result.length <= len(candidate)
            assert result.version in (1, 2)
        elif isinstance(result, InvalidProxyHeader):
            assert result.reason and result.reason == result.reason.lower()
        else:
            assert result is NEED_MORE


@given(st.sampled_from(VALID), st.binary(max_size=100))
def test_valid_headers_parse_whatever_follows(header: bytes, rest: bytes) -> None:
    result = parse_proxy_header(header + rest)
    assert isinstance(result, ProxyHeader)
    assert result.length == len(header)
