"""Parse ``adapter.redis_url``.

Accepted forms::

    redis://[[user]:password@]host[:port][/db]
    rediss://...                                 TLS
    unix://[[user]:password@]/path/to/redis.sock[?db=N]
    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service_name[/db]
    rediss+sentinel://...                        TLS to the master

Sentinel ports default to 26379.  ``user``/``password`` authenticate to the
master; add ``?sentinel_password=...`` when the sentinels need one.  The first
three forms are handed to redis-py's ``Redis.from_url`` unchanged.  Pure: no
I/O.
"""

from __future__ import annotations

import dataclasses
import urllib.parse

from .exceptions import BackendError

__all__ = ["DirectSpec", "SentinelSpec", "parse_redis_url"]

_DIRECT_SCHEMES = frozenset({"redis", "rediss", "unix"})
_SENTINEL_SCHEMES = frozenset({"redis+sentinel", "rediss+sentinel"})
_SENTINEL_PORT = 26379


@dataclasses.dataclass(frozen=True, slots=True)
class DirectSpec:
    url: str


@dataclasses.dataclass(frozen=True, slots=True)
class SentinelSpec:
    sentinels: tuple[tuple[str, int], ...]
    service_name: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None
    ssl: bool = False


def _host_port(item: str, url: str) -> tuple[str, int]:
    if item.startswith("["):  # [ipv6]:port
        host, _, rest = item[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise BackendError(f"redis url {url!r}: empty sentinel host")
    try:
        port = int(port_text) if port_text else _SENTINEL_PORT
    except ValueError:
        raise BackendError(f"redis url {url!r}: bad port {port_text!r}") from None
    return host, port


def parse_redis_url(url: str) -> DirectSpec | SentinelSpec:
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise BackendError(f"redis url {url!r} has no scheme")
    if scheme in _DIRECT_SCHEMES:
        return DirectSpec(url)
    if scheme not in _SENTINEL_SCHEMES:
        raise BackendError(
            f"redis url {url!r}: unsupported scheme {scheme!r} "
            "(use redis, rediss, unix, redis+sentinel or rediss+sentinel)"
        )
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    username = password = None
    if "@" in netloc:
        creds, _, netloc = netloc.rpartition("@")
        user_text, colon, password_text = creds.partition(":")
        username = urllib.parse.unquote(user_text) or None
        password = urllib.parse.unquote(password_text) if colon else None
    sentinels = tuple(_host_port(item, url) for item in netloc.split(",") if item)
    if not sentinels:
        raise BackendError(f"redis url {url!r}: no sentinel hosts")
    parts = [p for p in path.split("/") if p]
    if not parts:
        raise BackendError(f"redis url {url!r}: missing /service_name")
    service_name = urllib.parse.unquote(parts[0])
    db = 0
    if len(parts) > 1:
        try:
            db = int(parts[1])
        except ValueError:
            raise BackendError(f"redis url {url!r}: bad db {parts[1]!r}") from None
    if len(parts) > 2:
        raise BackendError(f"redis url {url!r}: expected /service_name[/db]")
    params = urllib.parse.parse_qs(query)
    sentinel_password = params.get("sentinel_password", [None])[0]
    return SentinelSpec(
        sentinels, service_name, db, username, password, sentinel_password,
        ssl=scheme == "rediss+sentinel",
    )
