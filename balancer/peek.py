"""Classify a connection from a peek at its first request head.  Pure.

The front door reads the head with ``MSG_PEEK``, consuming nothing, and asks
:func:`classify_head` what it is: a WebSocket upgrade (with the sid it
carries, if any), anything else, or not enough bytes yet.  An upgrade can then
be passed to its worker as a file descriptor with the head still unread in
the socket, so the worker's own aiohttp parses it as if it had accepted the
connection itself.  A polling handshake on a fresh keep-alive connection is
passed the same way, unread, to its worker's gate (:mod:`worker.gate`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .routing import extract_sid

__all__ = ["HANDSHAKE", "NEED_MORE", "PLAIN", "Handshake", "NeedMore", "Plain", "Upgrade",
           "classify_head"]


@dataclass(frozen=True, slots=True)
class NeedMore:
    pass


@dataclass(frozen=True, slots=True)
class Plain:
    """Not an upgrade (or not parseable here): aiohttp serves it, request by request."""


@dataclass(frozen=True, slots=True)
class Upgrade:
    sid: str | None
    path: str
    # It claims to be forwarded by another host: the proxy checks that claim.
    forwarded: bool = False


@dataclass(frozen=True, slots=True)
class Handshake:
    """A polling handshake the front door may pass on unread: a GET of the
    Engine.IO path with no sid, HTTP/1.1 kept alive, with no body, no upgrade and
    no claim to come from another host.  Anything less plain is :class:`Plain`,
    and parsed in the master."""


NEED_MORE = NeedMore()
HANDSHAKE = Handshake()
PLAIN = Plain()


def classify_head(data: bytes, *, complete: bool = False,
                  handshake_path: bytes = b"") -> NeedMore | Plain | Upgrade | Handshake:
    """``complete`` means no more bytes will be peeked (the buffer limit was reached);
    ``handshake_path``: the Engine.IO path, to tell a :class:`Handshake` (empty: never)."""
    if len(data) < 4:
        return PLAIN if complete else NEED_MORE
    if not data.startswith(b"GET "):
        return PLAIN
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return PLAIN if complete else NEED_MORE
    lines = data[:end].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return PLAIN
    upgrade = connection_upgrade = forwarded = False
    plain = False  # anything that keeps it from being a Handshake
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            return PLAIN
        key = name.strip().lower()
        if key == b"upgrade":
            upgrade = value.strip().lower() == b"websocket"
            plain = True
        elif key == b"connection":
            connection_upgrade = b"upgrade" in value.lower()
            plain = plain or value.strip().lower() != b"keep-alive"
        elif key == b"x-siocluster-forward":
            forwarded = True
        elif key in (b"content-length", b"transfer-encoding") or name.strip() != name:
            plain = True  # a body, or a name llhttp may judge otherwise
    if not (upgrade and connection_upgrade):
        if (plain or forwarded or not handshake_path or parts[2] != b"HTTP/1.1"
                or not _handshake_target(parts[1], handshake_path)):
            return PLAIN
        return HANDSHAKE
    try:
        target = parts[1].decode("ascii")
    except UnicodeDecodeError:
        return PLAIN
    path, _, query = target.partition("?")
    return Upgrade(sid=extract_sid(query), path=path, forwarded=forwarded)


def _handshake_target(target: bytes, path: bytes) -> bool:
    """``target`` is ``path`` with a query that names no sid."""
    if not target.startswith(path) or target[len(path):len(path) + 1] not in (b"?", b""):
        return False
    try:
        query = target[len(path) + 1:].decode("ascii")
    except UnicodeDecodeError:
        return False
    return extract_sid(query) is None
