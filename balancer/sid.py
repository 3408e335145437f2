"""Session ids that say where they live.

A worker mints every Engine.IO sid (and, through python-socketio's
``pre_connect``, every Socket.IO sid) as ``<slot>.<generation>.<random>``, with
slot and generation in lower-case hex and 15 random bytes in url-safe base64.
The balancer derives the owner from the sid alone, so no sid→worker table is
needed and there is nothing to race.  The generation changes every time a slot
is respawned, so a sid minted by a dead worker is recognised as stale instead
of being sent to its replacement.

When several hosts form one cluster (``[cluster] advertise``), the first part
also names the host: ``<host>-<slot>.<generation>.<random>``, where the host id
is 1 to 8 characters of ``[a-z0-9]`` registered uniquely in Redis
(:mod:`supervisor.hosts`).  A balancer that reads another host's id forwards
the request there.  Single-host sids carry no host and read as ``host == ""``.

This module is the contract between ``worker`` (minting) and ``balancer``
(parsing); it holds no I/O.
"""

from __future__ import annotations

import secrets
from typing import NamedTuple

__all__ = ["HOST_ID_CHARS", "SidOwner", "host_id_error", "mint_sid", "parse_sid"]

_MAX_SLOT_DIGITS = 4
_MAX_GEN_DIGITS = 8
_HEX = frozenset("0123456789abcdef")
HOST_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_MAX_HOST_CHARS = 8


class SidOwner(NamedTuple):
    slot: int
    generation: int
    host: str = ""  # "" : this host (single-host mode)


def host_id_error(host: str) -> str | None:
    """Why ``host`` cannot be a host id, or None when it can."""
    if not 1 <= len(host) <= _MAX_HOST_CHARS or not HOST_ID_CHARS.issuperset(host):
        return f"host id {host!r} must be 1 to {_MAX_HOST_CHARS} characters of a-z and 0-9"
    return None


def mint_sid(slot: int, generation: int, host: str = "") -> str:
    prefix = f"{host}-" if host else ""
    return f"{prefix}{slot:x}.{generation:x}.{secrets.token_urlsafe(15)}"


def _hex(text: str, max_digits: int) -> int | None:
    if not text or len(text) > max_digits or not _HEX.issuperset(text):
        return None
    return int(text, 16)


def parse_sid(sid: str) -> SidOwner | None:
    """Return the owner encoded in ``sid``, or None when it is not ours."""
    parts = sid.split(".", 2)
    if len(parts) != 3 or not parts[2]:
        return None
    host, dash, slot_text = parts[0].rpartition("-")
    if dash and host_id_error(host) is not None:
        return None
    slot = _hex(slot_text, _MAX_SLOT_DIGITS)
    generation = _hex(parts[1], _MAX_GEN_DIGITS)
    if slot is None or generation is None:
        return None
    return SidOwner(slot, generation, host)
