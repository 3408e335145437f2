from __future__ import annotations

import urllib.parse

from balancer.sid import SidOwner, mint_sid, parse_sid


def test_round_trip() -> None:
    for slot, gen in [(0, 0), (1, 0xABCD), (0xFFFF, 0xFFFFFFFF)]:
        sid = mint_sid(slot, gen)
        assert parse_sid(sid) == SidOwner(slot, gen)
        assert urllib.parse.quote(sid, safe="") == sid, "sids travel unescaped in URLs"


def test_unique() -> None:
    assert len({mint_sid(0, 1) for _ in range(10_000)}) == 10_000


def test_python_engineio_default_sids_are_not_ours() -> None:
    assert parse_sid("p2WtMaf5k2Uaikyynekh") is None
