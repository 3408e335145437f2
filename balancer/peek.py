"""Classify a connection from a peek at its first request head.  Pure.

The front door reads the head with ``MSG_PEEK``, consuming nothing, and asks
:func:`classify_head` what it is: a WebSocket upgrade (with the sid it
carries, if any), anything else, or not enough bytes yet.  An upgrade can then
be passed to its worker as a file descriptor with the head still unread in
the socket, so the worker's own aiohttp parses it as if it had accepted the
connection itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from .routing import extract_sid

__all__ = ["NEED_MORE", "PLAIN", "NeedMore", "Plain", "Upgrade", "classify_head"]


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


NEED_MORE = NeedMore()
PLAIN = Plain()


def classify_head(data: bytes, *, complete: bool = False) -> NeedMore | Plain | Upgrade:
    """``complete`` means no more bytes will be peeked (the buffer limit was reached)."""
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
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            return PLAIN
        key = name.strip().lower()
        if key == b"upgrade":
            upgrade = value.strip().lower() == b"websocket"
        elif key == b"connection":
            connection_upgrade = b"upgrade" in value.lower()
        elif key == b"x-siocluster-forward":
            forwarded = True
    if not (upgrade and connection_upgrade):
        return PLAIN
    try:
        target = parts[1].decode("ascii")
    except UnicodeDecodeError:
        return PLAIN
    path, _, query = target.partition("?")
    return Upgrade(sid=extract_sid(query), path=path, forwarded=forwarded)
