"""Session ids that say where they live.

A worker mints every Engine.IO sid (and, through python-socketio's
``pre_connect``, every Socket.IO sid) as ``<slot>.<generation>.<random>``, with
slot and generation in lower-case hex and 15 random bytes in url-safe base64.
The balancer derives the owner from the sid alone, so no sid→worker table is
needed and there is nothing to race.  The generation changes every time a slot
is respawned, so a sid minted by a dead worker is recognised as stale instead
of being sent to its replacement.

This module is the contract between ``worker`` (minting) and ``balancer``
(parsing); it holds no I/O.
"""

from __future__ import annotations

import secrets
from typing import NamedTuple

__all__ = ["SidOwner", "mint_sid", "parse_sid"]

_MAX_SLOT_DIGITS = 4
_MAX_GEN_DIGITS = 8
_HEX = frozenset("0123456789abcdef")


class SidOwner(NamedTuple):
    slot: int
    generation: int


def mint_sid(slot: int, generation: int) -> str:
    return f"{slot:x}.{generation:x}.{secrets.token_urlsafe(15)}"


def _hex(text: str, max_digits: int) -> int | None:
    if not text or len(text) > max_digits or not _HEX.issuperset(text):
        return None
    return int(text, 16)


def parse_sid(sid: str) -> SidOwner | None:
    """Return the owner encoded in ``sid``, or None when it is not ours."""
    parts = sid.split(".", 2)
    if len(parts) != 3 or not parts[2]:
        return None
    slot = _hex(parts[0], _MAX_SLOT_DIGITS)
    generation = _hex(parts[1], _MAX_GEN_DIGITS)
    if slot is None or generation is None:
        return None
    return SidOwner(slot, generation)
