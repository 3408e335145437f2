"""HttpConnection's timers on a real event loop, without sockets: a kept-alive
connection re-arms no timer per request, and still times each phase."""

from __future__ import annotations

import asyncio
from typing import Any

from balancer.config import LimitsConfig
from balancer.httpconn import HttpConnection
from balancer.httpmsg import Request
from balancer.stats import BalancerStats

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK"
GET = b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n"


class Transport:
    def __init__(self) -> None:
        self.out = b""
        self.closed_at: float | None = None

    def write(self, data: bytes) -> None:
        self.out += data

    def close(self) -> None:
        if self.closed_at is None:
            self.closed_at = asyncio.get_running_loop().time()

    def can_write_eof(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class Answering(HttpConnection):
    def _serve(self, req: Request) -> None:
        self._transport.write(ANSWER)
        self._finish(close=False)


def _open(head_s: float, idle_s: float) -> tuple[Answering, Transport, BalancerStats]:
    stats = BalancerStats()
    conn = Answering(LimitsConfig(header_timeout_s=head_s, idle_timeout_s=idle_s), stats)
    transport = Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport, stats


def test_requests_on_a_kept_alive_connection_reuse_one_timer() -> None:
    async def main() -> None:
        conn, transport, _ = _open(5.0, 60.0)
        first = conn._timer
        for _ in range(20):
            conn.data_received(GET)
        assert transport.out == ANSWER * 20
        assert conn._timer is first and first is not None, "no timer made per request"
        conn.connection_lost(None)
        assert conn._timer is None and first.cancelled(), "a closed connection keeps no timer"

    asyncio.run(main())


def test_the_idle_wait_outlasts_the_first_heads_timer() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        conn, transport, stats = _open(0.1, 0.4)
        conn.data_received(GET)  # answered at once; the head's 0.1 s handle stays armed
        answered = loop.time()
        while transport.closed_at is None and loop.time() - answered < 3:
            await asyncio.sleep(0.02)
        assert transport.closed_at is not None
        idle = transport.closed_at - answered
        assert 0.35 < idle < 1.5, idle  # idle_timeout_s, not header_timeout_s
        assert stats.head_timeouts == 0 and transport.out == ANSWER

    asyncio.run(main())


def test_a_head_that_stops_after_an_answer_is_timed_as_a_head() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        conn, transport, stats = _open(0.2, 30.0)
        conn.data_received(GET)
        conn.data_received(b"GET /y HTTP/1.1\r\nHo")  # then nothing more
        started = loop.time()
        while transport.closed_at is None and loop.time() - started < 3:
            await asyncio.sleep(0.02)
        assert transport.closed_at is not None and transport.closed_at - started < 1.5
        assert stats.head_timeouts == 1
        assert transport.out.startswith(ANSWER) and b"408" in transport.out[len(ANSWER):]

    asyncio.run(main())
