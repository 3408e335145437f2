"""Helpers shared by the workloads' shard code (inside the generator processes)."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

import aiohttp

__all__ = ["CONNECT_TIMEOUT_S", "Closable", "close_all", "describe", "http_session", "open_many"]

CONNECT_TIMEOUT_S = 30.0


class Closable(Protocol):
    async def close(self) -> None: ...


C = TypeVar("C", bound=Closable)


def describe(exc: BaseException) -> str:
    """A short, countable name for a failure."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    text = str(exc).splitlines()[0][:60] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def http_session() -> aiohttp.ClientSession:
    """No pool cap: a capped pool would queue the clients' long-polls behind each other.

    No cookie jar: the session is shared by many clients, and each client
    keeps its own cookies (:mod:`bench.clients`).
    """
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=False),
                                 timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                                 cookie_jar=aiohttp.DummyCookieJar())


async def open_many(factory: Callable[[int], Awaitable[C]], indices: Sequence[int],
                    concurrency: int) -> tuple[list[C], Counter[str]]:
    """Open one client per index, ``concurrency`` at a time; count the failures by kind."""
    gate = asyncio.Semaphore(concurrency)
    failures: Counter[str] = Counter()

    async def one(index: int) -> C | None:
        async with gate:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    return await factory(index)
            except Exception as exc:
                failures[describe(exc)] += 1
                return None

    opened = await asyncio.gather(*(one(i) for i in indices))
    return [c for c in opened if c is not None], failures


async def close_all(clients: Sequence[Closable], concurrency: int = 200,
                    timeout_s: float = 30.0) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(client: Closable) -> Any:
        async with gate:
            try:
                async with asyncio.timeout(5.0):
                    await client.close()
            except Exception:
                return None

    try:
        async with asyncio.timeout(timeout_s):
            await asyncio.gather(*(one(c) for c in clients))
    except TimeoutError:
        return


class RoundRobinHttp:
    """``connections`` one-connection sessions, each request on the next in turn,
    whichever client sends it: every connection carries every session's
    requests, interleaved (nginx's upstream keep-alive in front of many
    browsers, at its worst).  Has what :mod:`bench.clients` uses of a
    ``ClientSession``: ``get``, ``post``, ``close``."""

    def __init__(self, connections: int) -> None:
        self._sessions = [
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1),
                                  timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                                  cookie_jar=aiohttp.DummyCookieJar())
            for _ in range(connections)]
        self._turn = itertools.cycle(self._sessions)

    def get(self, *args: Any, **kwargs: Any) -> Any:
        return next(self._turn).get(*args, **kwargs)

    def post(self, *args: Any, **kwargs: Any) -> Any:
        return next(self._turn).post(*args, **kwargs)

    async def close(self) -> None:
        for session in self._sessions:
            await session.close()

    async def __aenter__(self) -> RoundRobinHttp:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
