"""balancer.stickiness: when a polling connection moves to a worker, and what its gate serves."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from balancer.routing import extract_sid
from balancer.sid import SidOwner, mint_sid
from balancer.stickiness import MAX_RETURNS, hand_off_now, query_sid, serves_here, streak_after

ME = SidOwner(1, 7)
PATH = b"/socket.io/"


def _serves(query: bytes, *, method: bytes = b"GET", path: bytes = PATH,
            version: str = "1.1", me: SidOwner = ME) -> bool:
    return serves_here(path, method, version, query, engineio_path=PATH, me=me) is not None


def test_a_streak_counts_requests_in_a_row_for_one_worker() -> None:
    assert streak_after(None, (0, 1), 0) == 1
    assert streak_after((0, 1), (0, 1), 1) == 2
    assert streak_after((0, 1), (1, 1), 5) == 1
    assert streak_after((0, 1), (0, 2), 5) == 1  # a new generation is another worker


def test_a_fresh_connection_moves_after_three_polling_requests_for_one_worker() -> None:
    # A session's opening (join, its answer) stays with the master: a storm's
    # connections upgrade right after it.
    assert not hand_off_now(2, 0)
    assert hand_off_now(3, 0)


def test_each_return_needs_a_longer_streak_then_never() -> None:
    assert not hand_off_now(47, 1)
    assert hand_off_now(48, 1)
    assert not hand_off_now(767, 2)
    assert hand_off_now(768, 2)
    assert not hand_off_now(10**9, MAX_RETURNS)


def test_the_gate_serves_get_and_post_with_its_own_sid() -> None:
    sid = mint_sid(1, 7).encode()
    assert _serves(b"EIO=4&transport=polling&sid=" + sid)
    assert _serves(b"EIO=4&transport=polling&sid=" + sid, method=b"POST")
    assert _serves(b"sid=" + sid + b"&EIO=4&transport=polling")


def test_the_gate_gives_back_everything_else() -> None:
    mine = b"EIO=4&transport=polling&sid=" + mint_sid(1, 7).encode()
    assert not _serves(b"EIO=4&transport=polling&sid=" + mint_sid(0, 7).encode())  # other slot
    assert not _serves(b"EIO=4&transport=polling&sid=" + mint_sid(1, 8).encode())  # generation
    assert not _serves(b"EIO=4&transport=polling")  # a handshake: the master admits it
    assert not _serves(mine, method=b"HEAD")
    assert not _serves(mine, method=b"OPTIONS")
    assert not _serves(mine, path=b"/app/")  # the app's own routes
    assert not _serves(mine, version="1.0")
    assert not _serves(b"EIO=4&transport=polling&sid=bogus")
    other_host = b"EIO=4&sid=" + mint_sid(1, 7, "hb").encode()
    assert not _serves(other_host)
    assert _serves(other_host, me=SidOwner(1, 7, "hb"))


def test_the_sid_it_serves_is_returned_and_known_sids_are_not_parsed_again() -> None:
    sid = mint_sid(1, 7).encode()
    query = b"EIO=4&transport=polling&t=Nx3&sid=" + sid
    assert serves_here(PATH, b"GET", "1.1", query, engineio_path=PATH, me=ME) == sid
    other = mint_sid(0, 7).encode()
    # ``known`` is what the gate found ours before: taken as it is.
    assert serves_here(PATH, b"GET", "1.1", b"sid=" + other, engineio_path=PATH, me=ME,
                       known=other) == other
    assert serves_here(PATH, b"GET", "1.1", b"sid=" + other, engineio_path=PATH, me=ME,
                       known=sid) is None
    # Nothing but the sid is taken on trust: the method, path and version still count.
    assert serves_here(PATH, b"HEAD", "1.1", query, engineio_path=PATH, me=ME,
                       known=sid) is None


@given(st.text(alphabet="sid=&xyz01.", max_size=30))
def test_query_sid_reads_the_query_as_engineio_does(query: str) -> None:
    found = query_sid(query.encode("latin-1"))
    expected = extract_sid(query)
    assert (found.decode("latin-1") if found is not None else None) == expected
