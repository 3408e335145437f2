"""Forwarded-request authentication between hosts (pure)."""

from __future__ import annotations

from balancer.peerauth import (
    MAX_SKEW_S,
    ForwardClaim,
    sign_forward,
    token_error,
    verify_forward,
)

TOKEN = "t" * 40
TARGET = "/socket.io/?EIO=4&transport=polling&sid=h1-0.1.abcdefghijklmnopqrst"


def test_a_signed_forward_verifies_and_names_the_client() -> None:
    value = sign_forward(TOKEN, "h2", 1000.0, "203.0.113.7", 51000, "POST", TARGET)
    assert TOKEN not in value
    claim = verify_forward(TOKEN, value, 1001.0, "POST", TARGET)
    assert claim == ForwardClaim("h2", "203.0.113.7", 51000)
    ipv6 = sign_forward(TOKEN, "h2", 1000.0, "2001:db8::1", 1, "GET", TARGET)
    assert verify_forward(TOKEN, ipv6, 1000.0, "get", TARGET) is not None


def test_anything_changed_is_refused() -> None:
    value = sign_forward(TOKEN, "h2", 1000.0, "203.0.113.7", 51000, "POST", TARGET)
    assert verify_forward("u" * 40, value, 1000.0, "POST", TARGET) is None  # other token
    assert verify_forward(TOKEN, value, 1000.0, "GET", TARGET) is None  # other method
    assert verify_forward(TOKEN, value, 1000.0, "POST", TARGET + "x") is None  # other target
    forged_client = value.replace("203.0.113.7", "10.0.0.1")
    assert verify_forward(TOKEN, forged_client, 1000.0, "POST", TARGET) is None
    forged_host = value.replace(" h2 ", " h3 ")
    assert verify_forward(TOKEN, forged_host, 1000.0, "POST", TARGET) is None
    assert verify_forward(TOKEN, value, 1000.0 + MAX_SKEW_S + 1, "POST", TARGET) is None
    assert verify_forward(TOKEN, value, 1000.0 - MAX_SKEW_S - 1, "POST", TARGET) is None
    for junk in ("", "v1", "v2 h2 1 1.2.3.4 1 00", "v1 h2 x 1.2.3.4 1 00",
                 "v1 h2 1000000 not-an-ip 1 00", "v1 h2 1000000 1.2.3.4 99999 00"):
        assert verify_forward(TOKEN, junk, 1000.0, "POST", TARGET) is None, junk
    assert verify_forward("", value, 1000.0, "POST", TARGET) is None


def test_token_rules() -> None:
    assert token_error("x" * 32) is None
    assert "required" in (token_error("") or "")
    assert "at least 32" in (token_error("short") or "")


def test_host_link_signs_a_header_line_and_counts_refusals() -> None:
    from balancer.hostforward import HostLink, split_address

    link = HostLink(TOKEN, connect_timeout_s=1.0, read_timeout_s=1.0)
    line = link.sign("h1", "GET", TARGET, "203.0.113.7")
    name, _, value = line.decode().partition(": ")
    assert name == "x-siocluster-forward"
    other = HostLink(TOKEN, connect_timeout_s=1.0, read_timeout_s=1.0)
    claim = other.verify(value, "GET", TARGET)
    assert claim is not None and claim.from_host == "h1" and claim.client_ip == "203.0.113.7"
    assert other.verify(value, "POST", TARGET) is None and other.refused == 1
    assert split_address("[2001:db8::1]:8000") == ("2001:db8::1", 8000)
    assert split_address("10.0.0.5:80") == ("10.0.0.5", 80)
