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


def test_accepted_sockets_inherit_them_and_no_delay_from_the_listener() -> None:
    """The front door sets them once, on its listener (balancer.frontdoor.bind)."""
    options = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1), *keepalive_options(60)]
    with socket.socket() as listener:
        for level, name, value in options:
            listener.setsockopt(level, name, value)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        with socket.create_connection(listener.getsockname()):
            accepted, _ = listener.accept()
            with accepted:
                for level, name, value in options:
                    assert accepted.getsockopt(level, name) == value, name
