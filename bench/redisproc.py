"""A throwaway redis-server on a free loopback port, for the fan-out baselines.

The test suite's helper (:mod:`tests.redis_server`) starts it; the bench runs
from the repository root, where that module is importable.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from tests.redis_server import RedisServer, find_redis_server

__all__ = ["redis_server"]


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """Yield the URL of a fresh redis-server; raise RuntimeError when there is none."""
    found = find_redis_server(install=False)
    if found is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    server = RedisServer(found)
    server.start()
    try:
        yield server.url
    finally:
        server.cleanup()
