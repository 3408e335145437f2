from __future__ import annotations

import urllib.parse

from balancer.sid import SidOwner, host_id_error, mint_sid, parse_sid


def test_round_trip() -> None:
    for slot, gen in [(0, 0), (1, 0xABCD), (0xFFFF, 0xFFFFFFFF)]:
        sid = mint_sid(slot, gen)
        assert parse_sid(sid) == SidOwner(slot, gen)
        assert urllib.parse.quote(sid, safe="") == sid, "sids travel unescaped in URLs"


def test_unique() -> None:
    assert len({mint_sid(0, 1) for _ in range(10_000)}) == 10_000


def test_python_engineio_default_sids_are_not_ours() -> None:
    assert parse_sid("p2WtMaf5k2Uaikyynekh") is None


def test_host_round_trip() -> None:
    for host in ("a", "h1", "zz99zz99"):
        sid = mint_sid(3, 0x1F, host)
        assert sid.startswith(f"{host}-3.1f.")
        assert parse_sid(sid) == SidOwner(3, 0x1F, host)
        assert urllib.parse.quote(sid, safe="") == sid
    assert parse_sid(mint_sid(3, 0x1F)) == SidOwner(3, 0x1F, "")


def test_bad_host_ids() -> None:
    assert host_id_error("h1") is None
    for bad in ("", "H1", "toolonghost", "a_b", "a-b", "é"):
        assert host_id_error(bad) is not None, bad
    assert parse_sid("-1.2.abcdefghijklmnopqrst") is None
    assert parse_sid("UPPER-1.2.abcdefghijklmnopqrst") is None
    assert parse_sid("a-b-1.2.abcdefghijklmnopqrst") is None
