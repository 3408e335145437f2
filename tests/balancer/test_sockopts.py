from __future__ import annotations

import socket

from balancer.sockopts import keepalive_options


def test_off_leaves_the_kernel_defaults() -> None:
    assert keepalive_options(0) == []


def test_probes_and_user_timeout_follow_the_setting() -> None:
    options = {(level, name): value for level, name, value in keepalive_options(60)}
    assert options[(socket.SOL_SOCKET, socket.SO_KEEPALIVE)] == 1
    assert options[(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)] == 60
    assert options[(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL)] == 15
    assert options[(socket.IPPROTO_TCP, socket.TCP_KEEPCNT)] == 4
    assert options[(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)] == 120_000


def test_small_values_stay_valid() -> None:
    options = {name: value for _, name, value in keepalive_options(0.3)}
    assert options[socket.TCP_KEEPIDLE] == 1 and options[socket.TCP_KEEPINTVL] == 1


def test_the_kernel_accepts_them() -> None:
    with socket.socket() as sock:
        for level, name, value in keepalive_options(5):
            sock.setsockopt(level, name, value)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 5
