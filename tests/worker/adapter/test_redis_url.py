from __future__ import annotations

import pytest

from worker.adapter.exceptions import BackendError
from worker.adapter.redis_url import DirectSpec, SentinelSpec, parse_redis_url


@pytest.mark.parametrize(
    "url",
    ["redis://localhost:6379/0", "rediss://u:p@h/2", "unix:///run/redis.sock?db=1"],
)
def test_direct_urls_pass_through(url: str) -> None:
    assert parse_redis_url(url) == DirectSpec(url)


def test_sentinel_url() -> None:
    spec = parse_redis_url(
        "redis+sentinel://user:p%40ss@s1:26380,s2,[::1]:26381/mymaster/3?sentinel_password=sp"
    )
    assert spec == SentinelSpec(
        sentinels=(("s1", 26380), ("s2", 26379), ("::1", 26381)),
        service_name="mymaster", db=3, username="user", password="p@ss",
        sentinel_password="sp", ssl=False,
    )
    tls = parse_redis_url("rediss+sentinel://h:1/svc")
    assert isinstance(tls, SentinelSpec) and tls.ssl and tls.db == 0


@pytest.mark.parametrize(
    "url",
    [
        "localhost:6379",
        "http://h/",
        "redis+sentinel://h:1",
        "redis+sentinel:///svc",
        "redis+sentinel://h:x/svc",
        "redis+sentinel://h/svc/notadb",
        "redis+sentinel://h/svc/1/extra",
    ],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(BackendError):
        parse_redis_url(url)
