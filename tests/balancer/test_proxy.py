"""The proxy's decisions that need no socket: headers for the worker, admission."""

from __future__ import annotations

from balancer.config import BalancerConfig, LimitsConfig
from balancer.proxy import Balancer, forward_headers
from balancer.routing import Forward


class _NoWorkers:
    engineio_path = "/socket.io/"

    def views(self) -> list[object]:
        return []


def test_forward_headers_keep_host_and_drop_hop_by_hop() -> None:
    headers = forward_headers(
        [("Host", "example.com"), ("Connection", "keep-alive"), ("X-Forwarded-For", "6.6.6.6"),
         ("Transfer-Encoding", "chunked"), ("Cookie", "a=1"), ("Cookie", "b=2")],
        client="10.0.0.1", proto="https",
    )
    assert headers["Host"] == "example.com"
    assert headers.getall("Cookie") == ["a=1", "b=2"]
    assert "Connection" not in headers and "Transfer-Encoding" not in headers
    assert headers["X-Forwarded-For"] == "10.0.0.1"  # the client we resolved, not its claim
    assert headers["X-Forwarded-Proto"] == "https"


def test_admission_rate_limits_new_sessions_per_address() -> None:
    balancer = Balancer(BalancerConfig(), LimitsConfig(handshake_rate_per_ip=1.0),
                        _NoWorkers())  # type: ignore[arg-type]
    forward = Forward(slot=0, generation=1, new_session=True)
    assert balancer._admit("1.2.3.4", forward) is None
    assert balancer._admit("1.2.3.4", forward) is None  # burst of two
    refused = balancer._admit("1.2.3.4", forward)
    assert refused is not None and refused.status == 429
    assert refused.headers["Retry-After"] == "1"
    assert balancer._admit("5.6.7.8", forward) is None  # another address is not affected
    assert balancer.stats.rate_limited == 1


def test_admission_caps_sessions_per_address() -> None:
    balancer = Balancer(BalancerConfig(), LimitsConfig(max_sessions_per_ip=2),
                        _NoWorkers())  # type: ignore[arg-type]
    forward = Forward(slot=0, generation=1, new_session=True)
    assert balancer._admit("1.2.3.4", forward) is None
    assert balancer._admit("1.2.3.4", forward) is None
    refused = balancer._admit("1.2.3.4", forward)
    assert refused is not None and refused.status == 429
    assert balancer.stats.session_limited == 1
